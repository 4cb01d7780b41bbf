"""User-facing errors.

An ``LmchainError`` carries a message that says what was wrong and what to do. The CLI prints
it as one line (no traceback) and exits with status 2; an Airflow task fails with it as the
task's error. Anything else that escapes is a bug in lmchain and keeps its traceback.
"""


class LmchainError(Exception):
    """Bad input or configuration: the message names the file or key and the fix."""


class ConfigError(LmchainError):
    """A recipe or an override is invalid."""


class InputError(LmchainError):
    """An input file or URL is missing or unreadable."""


class GateFailed(LmchainError):
    """A data-quality gate rejected its data; downstream stages must not run."""
