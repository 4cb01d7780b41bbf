"""Data quality: Great Expectations suites that stop bad data, quarantine it and show why.

:mod:`~lmchain.quality.gate` runs a suite as a GX checkpoint (quarantine, acceptance, reference
distributions); :mod:`~lmchain.quality.checks` validates a stage's batches and publishes the
evidence (the ``gate``, ``gate_labels`` and feedback ``gate`` stages, and ``lmchain gate``).
"""

from __future__ import annotations

from pathlib import Path

from lmchain.home import Home


def data_docs_dir(home: Home | Path) -> Path:
    """The static Data Docs site that the checkpoints rebuild."""
    return Home.of(home).data_docs
