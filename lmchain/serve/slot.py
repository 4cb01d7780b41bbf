"""The model the service answers with, and hot-swapping it when the registry alias moves.

A :class:`Loaded` model is immutable. Swapping replaces the slot's reference only after the new
model is loaded and warmed, so requests never wait on a load, and a batch that already took the
old model finishes on it. A version that fails to load is logged and counted, and the old one
keeps serving.

Following an alias, the slot loads only versions that the deploy stage validated (the
``lmchain.validated`` tag, see :func:`lmchain.registry.validation_problem`). Any other version the
alias points at is refused: logged once with the reason, counted, and the current model keeps
serving. A pinned version or a local folder is the operator's explicit choice and is not checked.

Given neither a model URI nor a folder, the slot waits for the first deploy: it answers nothing
(``waiting`` says why, and ``/readyz`` answers 503 with it) until the deploy stage writes the
deployment record (``Home.current_deployment``), then follows the alias the record names. So a
service started before the pipeline ever deployed stays up and becomes ready on its own, instead
of exiting and being restarted in a loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from lmchain.config import ServeConfig
from lmchain.errors import LmchainError
from lmchain.home import Home
from lmchain.serve import variants
from lmchain.serve.predictor import BasePredictor

log = logging.getLogger("lmchain.serve")

# Texts of different lengths: ONNX Runtime and PyTorch allocate per input shape on first use.
WARM_TEXTS = [
    "warm",
    "a warm-up sentence of moderate length for the model",
    " ".join(["a longer warm-up text that fills more of the sequence"] * 8),
]


class NotValidated(LmchainError):
    """The alias points at a version the deploy stage did not validate."""


class NoChampion(LmchainError):
    """Nothing deployed yet: no deployment record, or the alias points at no version."""


@dataclass(frozen=True)
class Loaded:
    name: str
    version: str
    variant: str
    predictor: BasePredictor
    loaded_at: float


def parse_alias(model_uri: str) -> tuple[str, str] | None:
    """(name, alias) of ``models:/name@alias``; None for a fixed version or a folder."""
    ref = model_uri.removeprefix("models:/")
    if model_uri.startswith("models:/") and "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias
    return None


class ModelSlot:
    def __init__(
        self,
        settings: ServeConfig,
        model_uri: str | None = None,
        model_dir: Path | None = None,
        home: Home | None = None,
    ):
        self.home = Home.of(home)  # its registry, its model downloads and variants
        self.settings = settings
        self.model_uri = model_uri
        self.model_dir = model_dir
        # Neither given: the deployment record to wait for (the first deploy writes it).
        self.deployment: Path | None = None if (model_uri or model_dir) else self.home.current_deployment
        self.current: Loaded | None = None
        self.load_error: str | None = None
        self.waiting: str | None = None  # why nothing is loaded yet, while nothing is deployed
        self.refusals = 0  # versions refused (each version and reason counted once)
        self.last_refusal: str | None = None
        self._refused: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()

    def _build(self, name: str, version: str, folder: Path, variant: str) -> Loaded:
        s = self.settings
        t0 = time.perf_counter()
        predictor = variants.load(
            folder,
            variant,
            max_length=s.max_length,
            batch_size=s.model_batch_size,
            threads=s.threads,
            cache=self.home.variants,
        )
        predictor.predict(WARM_TEXTS)
        log.warning("loaded %s version %s (%s) in %.1fs", name, version, variant, time.perf_counter() - t0)
        return Loaded(name, version, variant, predictor, time.time())

    def load_sync(self, version: str | None = None) -> Loaded:
        """Load the slot's model (or a given version of it) without touching ``current``.

        Following an alias, the version must carry a valid deploy validation tag (NotValidated)."""
        if self.model_dir is not None:
            variant = "fp32" if self.settings.variant == "auto" else self.settings.variant
            return self._build(self.model_dir.name, "local", self.model_dir, variant)
        from lmchain.serve import registered

        if not self.adopt_deployment():
            raise NoChampion(
                f"no champion yet: no deployment record at {self.deployment}; the pipeline's deploy writes it"
            )
        uri = self.model_uri
        if parse_alias(uri or ""):
            version = version or self.alias_version()
            if version is None:
                raise NoChampion(f"no champion yet: {uri} points at no version")
            self.check_validated(version)
        if version is not None:
            uri = f"models:/{self.registered_name()}/{version}"
        model = registered.resolve(uri or "", self.home)
        if model is None:
            raise LmchainError(f"{uri}: the alias points at no version")
        return self._build(model.name, model.version, model.folder, model.variant(self.settings.variant))

    def adopt_deployment(self) -> bool:
        """Whether the slot has a model URI; while waiting for the first deploy, it takes the one
        that the deployment record names as soon as the record exists."""
        if self.model_uri or self.model_dir is not None:
            return True
        if self.deployment is None or not self.deployment.is_file():
            return False
        self.model_uri = json.loads(self.deployment.read_text())["model_uri"]
        log.warning("deployment record %s found: following %s", self.deployment, self.model_uri)
        return True

    def check_validated(self, version: str) -> None:
        from lmchain import registry

        name = self.registered_name()
        problem = registry.validation_problem(name, version, self.home)
        if problem is None:
            return
        why = f"refusing {name} version {version} from {self.model_uri}: {problem}"
        if (version, problem) not in self._refused:  # the poller retries every few seconds: say it once
            self._refused.add((version, problem))
            self.refusals += 1
            self.last_refusal = why
            log.error("%s; still serving %s", why, self.current.version if self.current else "nothing")
        raise NotValidated(why)

    def registered_name(self) -> str:
        ref = (self.model_uri or "").removeprefix("models:/")
        return ref.split("@", 1)[0] if "@" in ref else ref.rsplit("/", 1)[0]

    def alias_version(self) -> str | None:
        """The version the followed alias points at now (None when not following an alias, or
        while no deployment record exists to say which)."""
        self.adopt_deployment()
        alias = parse_alias(self.model_uri or "")
        if alias is None:
            return None
        from lmchain import registry

        held = registry.champion(alias[0], alias[1], self.home)
        return str(held.version) if held else None

    async def initial_load(self) -> None:
        try:
            self.current = await run_in_threadpool(self.load_sync)
        except NoChampion as exc:  # not a failure: the poller loads the first champion when it exists
            self.waiting = str(exc)
            log.warning("%s; /readyz answers 503 until then", exc)
        except Exception as exc:  # reported by /readyz; the process stays up for diagnosis
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model load failed: %s", self.load_error)

    async def refresh(self) -> bool:
        """Swap to the alias's version if it moved; True when a swap happened (False when refused)."""
        async with self._lock:  # one load at a time, even if the poller and the admin call race
            wanted = await run_in_threadpool(self.alias_version)
            if wanted is None and self.current is None and self.model_uri and self.load_error is None:
                self.waiting = f"no champion yet: {self.model_uri} points at no version"  # the record appeared
            if wanted is None or (self.current and self.current.version == wanted):
                return False
            try:
                new = await run_in_threadpool(self.load_sync, wanted)
            except NotValidated:
                return False  # logged and counted once by check_validated; the current model stays
            old, self.current = self.current, new
            self.load_error = self.waiting = None
            log.warning("hot swap: %s version %s -> %s", new.name, old.version if old else None, new.version)
            return True

    async def follow(self, interval_s: float, on_swap, on_failure, on_refusal=None) -> None:
        """Poll the alias every ``interval_s``. A failed load calls ``on_failure``; a refused
        (unvalidated) version calls ``on_refusal`` once (default: ``on_failure``)."""
        on_refusal = on_refusal or on_failure
        counted = 0
        while True:
            counted = self._report_refusals(counted, on_refusal)
            await asyncio.sleep(interval_s)
            try:
                if await self.refresh():
                    on_swap(self.current)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                on_failure()
                log.error(
                    "could not swap to the new version (still serving %s): %s",
                    self.current.version if self.current else None,
                    exc,
                )

    def _report_refusals(self, counted: int, on_refusal) -> int:
        for _ in range(self.refusals - counted):  # the initial load's refusal included
            on_refusal()
        return self.refusals
