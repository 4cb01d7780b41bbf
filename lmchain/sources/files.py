"""Reading local files (txt, md, html, jsonl, csv, tsv, parquet) into text records.

A source is a file, a glob, or a folder (read recursively). txt files hold one record per line;
md and html files are one document each (html through the same extractor as crawled pages);
jsonl, csv, tsv and parquet hold one record per row. Saved Hugging Face datasets live in
``lmchain.sources.hf``.

A file that is missing, or that lacks the configured text column, is an input error that names
the file. A single bad line (invalid JSON, an empty text) is not: it becomes a reject with its
reason, so the rest of the file still counts and nothing is dropped unseen.

These readers serve every stage that reads files a user names (collect's sources, curate's
decontamination sets, annotate's label files, fine-tune's report set); they take paths and column
names, not a config section, so each caller passes what its own section says.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from lmchain.datasets import expand
from lmchain.errors import InputError

FORMATS = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".parquet": "parquet",
}

# The span formats of task: ner (collect.files[].format) and the extensions they are found by.
SPAN_EXTENSIONS = {
    "conll": (".conll", ".iob", ".bio", ".txt", ".tsv"),
    "spans": (".jsonl", ".json"),
    "label-studio": (".json",),
}

# SST-2 and similar corpora carry long sentences in unquoted TSV cells.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def resolve_files(path: str, fmt: str = "auto") -> list[Path]:
    """The files a source's path names; a saved dataset folder is returned as the folder itself.
    ``fmt``: a source's span format (``conll``...), whose own extensions are the ones accepted."""
    from lmchain.sources import hf

    suffixes = FORMATS if fmt == "auto" else SPAN_EXTENSIONS[fmt]

    if path.startswith(hf.HUB_PREFIX):
        return []  # a hub dataset: nothing local to check before the run
    pattern = expand(path)
    if glob.has_magic(pattern):
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    elif Path(pattern).is_dir():
        if hf.is_saved_dataset(Path(pattern)):
            return [Path(pattern)]
        matches = sorted(p for p in Path(pattern).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not matches:
            raise InputError(
                f"collect.files: folder {pattern} holds no file of a supported type ("
                + ", ".join(sorted(suffixes))
                + ") and is not a saved dataset"
            )
        return matches
    else:
        matches = [Path(pattern)]
    if not matches:
        raise InputError(f"collect.files: no file matches '{path}'; check the path or glob")
    for match in matches:
        if not match.is_file():
            raise InputError(f"collect.files: input file {match} does not exist; fix collect.files[].path")
        if match.suffix.lower() not in suffixes:
            raise InputError(
                f"collect.files: {match} has an unsupported extension; use one of " + ", ".join(sorted(suffixes))
            )
    return matches


def read_file(path: Path, text_field: str) -> Iterator[tuple[int, str | None, dict[str, Any], str | None]]:
    """Yield (line number, text or None, extra fields, reject reason or None) for each record."""
    fmt = FORMATS[path.suffix.lower()]
    if fmt == "html":
        yield _read_html(path)
        return
    if fmt == "parquet":
        yield from _read_parquet(path, text_field)
        return
    try:
        fh = open(path, encoding="utf-8", newline="")
        with fh:
            if fmt == "txt":
                for i, line in enumerate(fh, 1):
                    if line.strip():  # blank lines separate records; they are not records
                        yield i, line.rstrip("\n"), {}, None
            elif fmt == "md":
                yield _read_markdown(fh.read())
            elif fmt == "jsonl":
                yield from _read_jsonl(fh, path, text_field)
            else:
                yield from _read_delimited(fh, path, text_field, "\t" if fmt == "tsv" else ",")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"collect.files: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-encode it as UTF-8"
        ) from None


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
    if delimiter == "\t":  # TSV (SST-2's) has no quoting: a quote is part of the text
        reader = csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
    header = next(reader, None)
    if header is None:
        raise InputError(f"collect.files: {path} is empty; expected a header row with a '{text_field}' column")
    if text_field not in header:
        raise InputError(
            f"collect.files: {path} has no column '{text_field}' (columns: {', '.join(header)}); "
            "set text_field to the column that holds the text"
        )
    col = header.index(text_field)
    for i, row in enumerate(reader, 2):
        if len(row) != len(header):
            yield i, None, {"raw": delimiter.join(row)[:500]}, f"bad_row: {len(row)} fields, header has {len(header)}"
            continue
        extra = {h: v for j, (h, v) in enumerate(zip(header, row)) if j != col}
        yield i, row[col], extra, None


def _read_markdown(text: str):
    title = next((line.lstrip("#").strip() for line in text.splitlines() if line.startswith("# ")), "")
    if not text.strip():
        return 1, None, {"title": title}, "empty_text: the file is empty"
    return 1, text.strip(), {"title": title}, None


def _read_html(path: Path):
    from lmchain.collect.charset import decode
    from lmchain.collect.extract import extract

    html, charset = decode(path.read_bytes(), "text/html")
    ex = extract(html, path.resolve().as_uri())
    extra = {"title": ex.title, "language": ex.language, "charset": charset, "extractor": ex.extractor}
    if not ex.text.strip():
        return 1, None, extra, "empty_text: no text in the page"
    return 1, ex.text, extra, None


def _read_parquet(path: Path, text_field: str):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(f"collect.files: {path} is not a readable parquet file ({exc})") from None
    yield from rows_to_records(pf.iter_batches(batch_size=4096), path, text_field, pf.schema_arrow.names)


def rows_to_records(batches, where, text_field: str, columns: list[str]):
    """Records of Arrow record batches (parquet files, saved datasets)."""
    if text_field not in columns:
        raise InputError(
            f"collect.files: {where} has no column '{text_field}' (columns: {', '.join(columns)}); "
            "set text_field to the column that holds the text"
        )
    row = 0
    for batch in batches:
        for rec in batch.to_pylist():
            row += 1
            text = rec.pop(text_field)
            if not isinstance(text, str):
                yield row, None, {"raw": str(rec)[:500]}, f"missing_text_field: '{text_field}' is {type(text).__name__}"
                continue
            yield row, text, rec, None
