"""Reading batches for the gate: record files and labelled splits as pandas frames."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from lmchain.artifacts import read_jsonl
from lmchain.errors import InputError

SPLITS = ("train", "validation", "test")


def records_frame(path: str | Path):
    """A JSONL/CSV/TSV file of records as a DataFrame with string ids and texts."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"gate: batch file {path} does not exist")
    if path.suffix in (".csv", ".tsv"):
        df = pd.read_csv(
            path,
            sep="\t" if path.suffix == ".tsv" else ",",
            dtype=str,
            keep_default_na=False,
            quoting=3 if path.suffix == ".tsv" else 0,
        )
    else:
        df = pd.DataFrame(list(read_jsonl(path)))  # an InputError names a bad line
    if df.empty:
        df = pd.DataFrame({"id": pd.Series(dtype=str), "text": pd.Series(dtype=str), "source": pd.Series(dtype=str)})
    if "id" not in df.columns:
        df["id"] = [str(i) for i in range(len(df))]
    df["id"] = df["id"].astype(str)
    if "text" in df.columns:
        df["text"] = df["text"].where(df["text"].notna(), None)
    return df


def labelled_frame(files: Mapping[str, str | Path]):
    """The labelled splits as one table with ``split`` and ``label`` (label names) columns."""
    import pandas as pd

    frames = []
    for split, path in files.items():
        df = records_frame(path)
        df["split"] = split
        if "label_name" in df.columns:
            df["label"] = df["label_name"]
        frames.append(df)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if "label" in out.columns:
        out["label"] = out["label"].astype(str)
    return out


def labelled_files(folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    files = {s: folder / f"{s}.jsonl" for s in SPLITS if (folder / f"{s}.jsonl").is_file()}
    if not files:
        raise InputError(f"gate: {folder} holds none of {', '.join(s + '.jsonl' for s in SPLITS)}")
    return files
