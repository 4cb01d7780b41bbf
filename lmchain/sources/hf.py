"""Hugging Face datasets as a source: a folder saved with ``save_to_disk``, or a hub name online.

The ``datasets`` package is optional. A saved folder is Arrow IPC stream files plus two JSON
files (``state.json`` names the data files; a dataset dict has ``dataset_dict.json`` and one
folder per split), so without ``datasets`` we read it with pyarrow, which lmchain already has.
A hub dataset (``hf:NAME``) needs ``datasets`` and a network.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmchain.sources.files import rows_to_records
from lmchain.errors import InputError

HUB_PREFIX = "hf:"


def is_saved_dataset(folder: Path) -> bool:
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def read_saved(folder: Path, text_field: str, split: str):
    """Records of a dataset saved to disk (``Dataset`` or ``DatasetDict``)."""
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise InputError(
                f"collect.files: dataset {folder} has splits {splits}, not '{split}'; set collect.files[].split"
            )
        folder = folder / split
    try:
        import datasets
    except ImportError:
        yield from _read_arrow_files(folder, text_field)
        return
    ds = datasets.load_from_disk(str(folder))
    # iter() applies an indices mapping (a saved select/shuffle) that the raw table would ignore.
    yield from rows_to_records(ds.with_format("arrow").iter(batch_size=4096), folder, text_field, ds.column_names)


def _read_arrow_files(folder: Path, text_field: str):
    import pyarrow as pa

    state = json.loads((folder / "state.json").read_text())
    files = [folder / f["filename"] for f in state.get("_data_files", [])]
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise InputError(
            f"collect.files: dataset {folder} is incomplete (missing {missing or 'data files'}); "
            "save it again with save_to_disk"
        )
    batches, names = [], None
    for path in files:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
        names = table.schema.names
        batches.extend(table.to_batches())
    yield from rows_to_records(batches, folder, text_field, names or [])


def read_hub(name: str, text_field: str, split: str):
    try:
        import datasets
    except ImportError:
        raise InputError(
            f"collect.files: '{HUB_PREFIX}{name}' needs the `datasets` package "
            "(pip install datasets) and a network; offline, give a folder saved with save_to_disk"
        )
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown name, gated dataset: all end here
        raise InputError(f"collect.files: cannot load hub dataset '{name}' split '{split}': {exc}") from None
    yield from rows_to_records(
        ds.with_format("arrow").iter(batch_size=4096), f"{HUB_PREFIX}{name}", text_field, ds.column_names
    )
