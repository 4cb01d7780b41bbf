"""Locating the data sets that recipes refer to by placeholder.

``${SST2}`` in a recipe path is the SST-2 folder (``train.tsv``, ``dev.tsv``), looked up in
``$LMCHAIN_DATA/sst2`` or ``$LMCHAIN_DATA``, then ``../shared/data/sst2`` beside the
repository or the working directory, then ``<home>/data/sst2`` (where a download goes).
When none has it and the machine is online, GLUE SST-2 is fetched from the Hugging Face hub
once into ``<home>/data/sst2``; offline, the error says where to put the files.

``${CONLL}`` is the CoNLL-2003 English folder (``train.txt``, ``valid.txt``), looked up the same
way in ``$LMCHAIN_DATA/conll2003``, ``$LMCHAIN_DATA`` and ``../shared/data/conll2003``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmchain.airflow_env import REPO_ROOT
from lmchain.errors import InputError
from lmchain.home import Home

SST2_FILES = ("train.tsv", "dev.tsv")


def _sst2_candidates(home: Home) -> list[Path]:
    out = []
    if home.data is not None:
        out += [home.data / "sst2", home.data]
    out += [REPO_ROOT.parent / "shared" / "data" / "sst2", Path.cwd().parent / "shared" / "data" / "sst2"]
    out.append(home.sst2_download)
    return out


def sst2_dir(download: bool = True, home: Home | None = None) -> Path:
    """The folder holding SST-2's ``train.tsv`` and ``dev.tsv`` (``home``: whose LMCHAIN_DATA and
    download folder; None: the environment's)."""
    candidates = _sst2_candidates(Home.of(home))
    for cand in candidates:
        if all((cand / f).is_file() for f in SST2_FILES):
            return cand
    target = candidates[-1]
    if download:
        try:
            _download_sst2(target)
            return target
        except Exception as exc:  # offline, or datasets missing: say where the files go
            reason = f" (download failed: {type(exc).__name__}: {exc})"
    else:
        reason = ""
    raise InputError(
        "SST-2 not found. Put train.tsv and dev.tsv (tab-separated, columns sentence and label) in "
        f"$LMCHAIN_DATA/sst2, or in {candidates[1]}{reason}. Looked in: " + ", ".join(str(c) for c in candidates)
    )


def _download_sst2(target: Path) -> None:
    """Fetch GLUE SST-2 from the hub (online machines only) and write it as TSV."""
    from datasets import load_dataset  # optional dependency, only needed online

    ds = load_dataset("nyu-mll/glue", "sst2")
    target.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        from lmchain.artifacts import attempt_path

        tmp = attempt_path(target / name)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("sentence\tlabel\n")
            for row in ds[split]:
                fh.write(f"{row['sentence'].strip()}\t{row['label']}\n")
        tmp.replace(target / name)


CONLL_FILES = ("train.txt",)


def _conll_candidates(home: Home) -> list[Path]:
    out = []
    if home.data is not None:
        out += [home.data / "conll2003", home.data]
    out += [REPO_ROOT.parent / "shared" / "data" / "conll2003", Path.cwd().parent / "shared" / "data" / "conll2003"]
    return out


def conll_dir(home: Home | None = None) -> Path:
    """The folder holding CoNLL-2003 English (``train.txt``, ``valid.txt``: ``token TAG`` lines), looked
    up as SST-2 is; never downloaded (its licence asks for a copy of the Reuters corpus)."""
    candidates = _conll_candidates(Home.of(home))
    for cand in candidates:
        if all((cand / f).is_file() for f in CONLL_FILES):
            return cand
    raise InputError(
        "CoNLL-2003 not found. Put train.txt and valid.txt (one 'token TAG' per line, a blank line between "
        f"sentences) in $LMCHAIN_DATA/conll2003, or in {candidates[-2]}. Looked in: "
        + ", ".join(str(c) for c in candidates)
    )


def expand(path: str) -> str:
    """Expand ``${SST2}``, ``${CONLL}``, ``~`` and environment variables in a recipe path."""
    if "${SST2}" in path:
        path = path.replace("${SST2}", str(sst2_dir()))
    if "${CONLL}" in path:
        path = path.replace("${CONLL}", str(conll_dir()))
    return os.path.expanduser(os.path.expandvars(path))
