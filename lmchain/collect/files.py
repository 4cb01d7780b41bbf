"""Reading local files (txt, jsonl, csv, tsv) into text records.

A file that is missing, or that lacks the configured text column, is an input error that names
the file. A single bad line (invalid JSON, an empty text) is not: it becomes a reject with its
reason, so the rest of the file still counts and nothing is dropped unseen.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from lmchain.config import FileSource
from lmchain.datasets import expand
from lmchain.errors import InputError

FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}

# SST-2 and similar corpora carry long sentences in unquoted TSV cells.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def resolve_files(source: FileSource) -> list[Path]:
    pattern = expand(source.path)
    matches = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(pattern) else [Path(pattern)]
    if not matches:
        raise InputError(f"collect.files: no file matches '{source.path}'; check the path or glob")
    for path in matches:
        if not path.is_file():
            raise InputError(f"collect.files: input file {path} does not exist; fix collect.files[].path")
        if path.suffix.lower() not in FORMATS:
            raise InputError(f"collect.files: {path} has an unsupported extension; use one of "
                             + ", ".join(sorted(FORMATS)))
    return matches


def read_file(path: Path, text_field: str) -> Iterator[tuple[int, str | None, dict[str, Any], str | None]]:
    """Yield (line number, text or None, extra fields, reject reason or None) for each record."""
    fmt = FORMATS[path.suffix.lower()]
    try:
        fh = open(path, encoding="utf-8", newline="")
        with fh:
            if fmt == "txt":
                for i, line in enumerate(fh, 1):
                    if line.strip():  # blank lines separate records; they are not records
                        yield i, line.rstrip("\n"), {}, None
            elif fmt == "jsonl":
                yield from _read_jsonl(fh, path, text_field)
            else:
                yield from _read_delimited(fh, path, text_field, "\t" if fmt == "tsv" else ",")
    except UnicodeDecodeError as exc:
        raise InputError(f"collect.files: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "re-encode it as UTF-8") from None


def _read_jsonl(fh, path: Path, text_field: str):
    for i, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield i, None, {"raw": line[:500]}, f"bad_json: {exc.msg}"
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
            yield i, None, {"raw": line[:500]}, f"missing_text_field: '{text_field}'"
            continue
        text = obj.pop(text_field)
        yield i, text, obj, None


def _read_delimited(fh, path: Path, text_field: str, delimiter: str):
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if header is None:
        raise InputError(f"collect.files: {path} is empty; expected a header row with a '{text_field}' column")
    if text_field not in header:
        raise InputError(f"collect.files: {path} has no column '{text_field}' (columns: {', '.join(header)}); "
                         "set text_field to the column that holds the text")
    col = header.index(text_field)
    for i, row in enumerate(reader, 2):
        if len(row) != len(header):
            yield i, None, {"raw": delimiter.join(row)[:500]}, f"bad_row: {len(row)} fields, header has {len(header)}"
            continue
        extra = {h: v for j, (h, v) in enumerate(zip(header, row)) if j != col}
        yield i, row[col], extra, None
