"""Training checkpoints that a killed job resumes from: atomic, pruned, exported to HF format.

DeepSpeed writes a checkpoint as many files (module, optimizer shards per rank, scheduler, our
client state) and then a ``latest`` file; a job killed in between leaves a folder that looks
complete but is not. Here every rank saves into ``<tag>.partial/``; after the collective save
the folder is renamed to ``<tag>/`` and ``latest`` is replaced atomically, so ``latest`` only
ever names a whole checkpoint. Resuming loads module, optimizer and scheduler state through
DeepSpeed and returns the client state (step, data position, loss history) to the worker.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

LATEST = "latest"
PARTIAL = ".partial"


def tag_for(step: int) -> str:
    return f"step{step:09d}"


def latest_tag(root: Path) -> str | None:
    """The tag of the newest complete checkpoint under ``root``, or None."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    return tag if (root / tag).is_dir() else None


def _replace_text(path: Path, text: str) -> None:
    from lmchain.artifacts import attempt_path

    tmp = attempt_path(path)
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save(engine, root: Path, step: int, client_state: dict[str, Any], keep: int, is_local_leader: bool, barrier) -> str:
    """Collective: every rank calls it. Returns the tag of the checkpoint now named by ``latest``."""
    tag = tag_for(step)
    partial = tag + PARTIAL
    engine.save_checkpoint(str(root), tag=partial, client_state=client_state, save_latest=False)
    # One process per machine publishes; on shared storage the second rename finds nothing to do.
    if is_local_leader:
        if (root / tag).exists():  # the same step saved by an earlier attempt: replace it
            shutil.rmtree(root / tag, ignore_errors=True)
        try:
            os.replace(root / partial, root / tag)
        except FileNotFoundError:
            pass
        _replace_text(root / LATEST, tag)
        prune(root, keep)
    barrier()
    return tag


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and leftovers of killed saves."""
    current = latest_tag(root)
    complete = sorted(p.name for p in root.glob("step*") if p.is_dir() and not p.name.endswith(PARTIAL))
    for name in complete[: -max(1, keep)]:
        if name != current:
            shutil.rmtree(root / name, ignore_errors=True)
    for p in root.glob(f"step*{PARTIAL}"):
        if p.name != (current or "") + PARTIAL:
            shutil.rmtree(p, ignore_errors=True)


def resume(engine, root: Path) -> tuple[str | None, dict[str, Any]]:
    """Load the latest complete checkpoint into ``engine`` (module, optimizer, scheduler).

    Returns (tag, client_state), or (None, {}) when there is none yet.
    """
    tag = latest_tag(root)
    if tag is None:
        return None, {}
    path, client_state = engine.load_checkpoint(
        str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise RuntimeError(f"checkpoint {root / tag} could not be loaded")
    return tag, dict(client_state or {})


def fp32_state_dict(root: Path, tag: str) -> dict:
    """Consolidated fp32 weights of a ZeRO checkpoint (what DeepSpeed's zero_to_fp32 script does):
    under ZeRO-3 no rank holds the whole model, so the export reads the saved shards."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
