"""Human labels from files: CSV, TSV, JSONL and Label Studio JSON exports.

Each row becomes a :class:`Vote` (normalised text, label id, annotator, provenance, where).
Raw labels go through the source's ``label_map`` and are matched to ``label_names`` without
regard to case, or taken as ids. A bad row (unknown label, empty text, missing label) is an
error that names the file and the row, or with ``strict: false`` a reject with that reason.

Label Studio's JSON export is a list of tasks, each with ``data`` (the text under
``text_field``) and ``annotations`` (one per annotator: ``completed_by`` and a ``result``
list whose ``choices`` value is the label). Its JSON-MIN export is a list of flat objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lmchain.config import AnnotateConfig, LabelSource
from lmchain.errors import InputError
from lmchain.home import Home


@dataclass(frozen=True)
class Vote:
    text: str  # normalised
    label: int
    annotator: str
    provenance: str  # human | feedback
    precedence: int
    where: str  # file#row, for errors and rejects


def detect_format(path: Path, declared: str = "auto") -> str:
    """'label-studio' for a Label Studio export; otherwise the reader's format for the file's
    extension (:data:`lmchain.sources.files.FORMATS`), which is how its rows are read."""
    from lmchain.sources.files import FORMATS

    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    if suffix == ".json":
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096).lstrip()
        return "label-studio" if head.startswith("[") else "jsonl"
    return FORMATS.get(suffix, suffix[1:])


class LabelResolver:
    """Raw label -> label id: the source's map first, then the names (any case), then an id."""

    def __init__(self, names: list[str], label_map: dict):
        self.names = names
        self.lower = {n.lower(): i for i, n in enumerate(names)}
        self.label_map = {str(k).strip().lower(): str(v).strip() for k, v in (label_map or {}).items()}

    def __call__(self, raw) -> int | None:
        value = str(raw).strip()
        value = self.label_map.get(value.lower(), value)
        if value.lower() in self.lower:
            return self.lower[value.lower()]
        if value.lstrip("-").isdigit() and 0 <= int(value) < len(self.names):
            return int(value)
        return None


def _label_studio_rows(path: Path, src: LabelSource) -> Iterator[tuple[str, object, object, object, str | None]]:
    """(where, text, raw label, annotator, problem) per annotation of a Label Studio export."""
    from lmchain.sources.spans import label_studio_tasks

    tasks = label_studio_tasks(path, "annotate.labels")
    for n, task in enumerate(tasks, 1):
        where = f"{path}#task{n}" + (f"(id={task['id']})" if isinstance(task, dict) and "id" in task else "")
        if not isinstance(task, dict):
            yield where, None, None, None, "not_an_object"
            continue
        if "annotations" not in task:  # JSON-MIN: one flat object per task
            yield (
                where,
                task.get(src.text_field),
                task.get(src.label_field, _MISSING),
                task.get(src.annotator_field or "annotator", "label-studio"),
                None,
            )
            continue
        data = task.get("data") or {}
        text = data.get(src.text_field)
        for a in task["annotations"]:
            if a.get("was_cancelled"):
                continue
            who = a.get("completed_by")
            who = who.get("email", who.get("id")) if isinstance(who, dict) else who
            choices = [
                c
                for r in a.get("result", [])
                if r.get("type") == "choices" and (src.label_field in ("label", r.get("from_name")))
                for c in r.get("value", {}).get("choices", [])
            ]
            yield (
                where,
                text,
                choices[0] if len(choices) == 1 else (_MISSING if not choices else choices),
                who if who is not None else "label-studio",
                None,
            )


_MISSING = object()


def _delimited_rows(path: Path, src: LabelSource) -> Iterator[tuple[str, object, object, object, str | None]]:
    from lmchain.sources.files import read_file

    label_seen = False
    for line, text, extra, bad in read_file(path, src.text_field):
        where = f"{path}#row{line}"
        if bad and "missing_text_field" in bad:
            yield where, None, extra.get(src.label_field, _MISSING), None, "empty_text"
            continue
        if bad:
            yield where, None, None, None, bad
            continue
        if not label_seen and src.label_field not in extra:
            raise InputError(
                f"annotate.labels: {path} has no label column '{src.label_field}' (row {line}); "
                "set label_field to the column that holds the label"
            )
        label_seen = True
        annotator = extra.get(src.annotator_field) if src.annotator_field else None
        yield where, text, extra.get(src.label_field, _MISSING), annotator, None


def _rows(path: Path, src: LabelSource):
    fmt = detect_format(path, src.format)
    return _label_studio_rows(path, src) if fmt == "label-studio" else _delimited_rows(path, src)


def raw_labels(src: LabelSource) -> set[str]:
    """The distinct labels of a source (after its label_map): label names when none are configured."""
    from lmchain.sources.files import resolve_files

    mapping = {str(k).strip().lower(): str(v).strip() for k, v in (src.label_map or {}).items()}
    seen = set()
    for path in resolve_files(src.path):
        for _, text, raw, _, problem in _rows(path, src):
            if (
                problem is None
                and raw is not _MISSING
                and raw is not None
                and not isinstance(raw, list)
                and str(raw).strip()
            ):
                seen.add(mapping.get(str(raw).strip().lower(), str(raw).strip()))
    return seen


def read_votes(src: LabelSource, names: list[str]) -> tuple[list[Vote], list[dict], list[str]]:
    """All votes of one label source -> (votes, rejects, files read)."""
    from lmchain.sources.files import resolve_files
    from lmchain.text import normalize_text

    resolve = LabelResolver(names, src.label_map)
    votes: list[Vote] = []
    rejects: list[dict] = []
    files = resolve_files(src.path)
    for path in files:
        rows = _rows(path, src)
        default_annotator = path.name
        for where, text, raw, annotator, problem in rows:
            if src.limit is not None and len(votes) >= src.limit:
                break
            text = normalize_text(text) if isinstance(text, str) else ""
            label = None
            if problem is None:
                if not text:
                    problem = "empty_text"
                elif raw is _MISSING or raw is None or str(raw).strip() == "":
                    problem = f"missing_label: no value in '{src.label_field}'"
                elif isinstance(raw, list):
                    problem = f"several_labels: {raw} in one annotation"
                else:
                    label = resolve(raw)
                    if label is None:
                        problem = f"unknown_label: '{raw}' is not one of {names}" + (
                            " (after label_map)" if src.label_map else ""
                        )
            if problem is not None:
                if src.strict:
                    raise InputError(
                        f"annotate.labels: {where}: {_explain(problem, src)}; fix the row, or set "
                        "strict: false on this source to keep bad rows in rejects.jsonl"
                    )
                rejects.append(
                    {"where": where, "text": text, "label": None if raw is _MISSING else raw, "reason": problem}
                )
                continue
            assert label is not None  # a row without a problem has a resolved label
            votes.append(
                Vote(
                    text,
                    label,
                    str(annotator if annotator not in (None, "") else default_annotator),
                    src.provenance,
                    src.precedence,
                    where,
                )
            )
    return votes, rejects, [str(p.resolve()) for p in files]


def _explain(problem: str, src: LabelSource) -> str:
    if problem == "empty_text":
        return f"empty text (column '{src.text_field}')"
    return problem


def write_label_studio_export(rows: list[dict], path: Path, from_name: str = "label", to_name: str = "text") -> Path:
    """Rows {text, label name, annotator} as a Label Studio JSON export (one task per text), so
    labels made elsewhere can be loaded into Label Studio and read back by this module."""
    tasks: dict[str, dict] = {}
    for row in rows:
        task = tasks.setdefault(row["text"], {"id": len(tasks) + 1, "data": {"text": row["text"]}, "annotations": []})
        task["annotations"].append(
            {
                "completed_by": row.get("annotator", 1),
                "was_cancelled": False,
                "result": [
                    {
                        "from_name": from_name,
                        "to_name": to_name,
                        "type": "choices",
                        "value": {"choices": [row["label"]]},
                    }
                ],
            }
        )
    path.write_text(json.dumps(list(tasks.values()), ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def returned_dir(cfg: AnnotateConfig, lm_home: Home | Path) -> Path:
    return Path(cfg.active.returned_dir) if cfg.active.returned_dir else Home.of(lm_home).annotation_returned


def label_sources(cfg: AnnotateConfig, lm_home: Home | Path) -> list[LabelSource]:
    """The recipe's label files plus review-queue files people returned (lenient: rows they left
    unlabelled become rejects, not errors)."""
    sources = list(cfg.labels)
    folder = returned_dir(cfg, lm_home)
    if folder.is_dir():
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json")):
            sources.append(LabelSource(path=str(path), text_field="text", label_field="label", strict=False))
    return sources


def load_votes(sources: list[LabelSource], names: list[str]):
    """Every vote of every source -> (votes, rejects, label names, files read). Without
    ``names`` the label names are the sorted raw labels seen."""
    votes, rejects, files = [], [], []
    # Without configured names, the names are the raw labels seen, sorted (as before this package).
    learned = list(names) or sorted(set().union(*(raw_labels(src) for src in sources)))
    for src in sources:
        got, bad, read = read_votes(src, learned)
        votes += got
        rejects += bad
        files += read
    return votes, rejects, learned, files
