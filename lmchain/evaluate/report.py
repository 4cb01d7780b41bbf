"""The evaluation report: PNG figures (matplotlib, headless) and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    return plt


def confusion_png(confusion: list[list[int]], labels: list[str], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=100)
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def reliability_png(bins: list[dict], ece: float, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 3.6), dpi=100)
    filled = [b for b in bins if b["count"]]
    centers = [(b["lo"] + b["hi"]) / 2 for b in filled]
    width = bins[0]["hi"] - bins[0]["lo"]
    ax.bar(centers, [b["accuracy"] for b in filled], width=width * 0.9, color="#4c72b0", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(centers, [b["confidence"] for b in filled], "o", color="#dd8452", label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def slices_png(challenger: dict[str, dict], champion: dict[str, dict] | None, path: Path) -> Path:
    plt = _plt()
    keys = list(challenger)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(keys) + 1.2), dpi=100)
    ys = range(len(keys))
    h = 0.4 if champion else 0.8
    ax.barh(
        [y + (h / 2 if champion else 0) for y in ys],
        [challenger[k]["accuracy"] for k in keys],
        height=h,
        color="#4c72b0",
        label="challenger",
    )
    if champion:
        ax.barh(
            [y - h / 2 for y in ys],
            [champion.get(k, {}).get("accuracy", 0) for k in keys],
            height=h,
            color="#c44e52",
            label="champion",
        )
        ax.legend(fontsize=7)
    ax.set_yticks(list(ys), [f"{k} (n={challenger[k]['n']})" for k in keys], fontsize=7)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()  # first slice on top, as in the table
    ax.set_xlabel("accuracy")
    ax.set_title("Accuracy by slice")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_report(
    out_dir: Path,
    *,
    title: str,
    metrics: dict,
    labels: list[str],
    calib: dict,
    slices: dict,
    champion: dict | None,
    decision: dict,
    latency_ms: float,
) -> dict[str, Path]:
    """Write the figures and report.html into ``out_dir``; returns their paths."""
    figs = {
        "confusion": confusion_png(metrics["confusion"], labels, out_dir / "confusion.png"),
        "reliability": reliability_png(calib["bins"], calib["ece"], out_dir / "reliability.png"),
        "slices": slices_png(slices, champion["slices"] if champion else None, out_dir / "slices.png"),
    }
    pc = metrics["per_class"]
    summary = [
        ["accuracy", metrics["accuracy"]],
        ["macro F1", metrics["macro_f1"]],
        ["micro F1", metrics["micro_f1"]],
        ["ECE", calib["ece"]],
        ["latency per example (ms)", latency_ms],
        ["test examples", metrics["n"]],
    ]
    per_class = [
        [labels[i], pc["precision"][i], pc["recall"][i], pc["f1"][i], pc["support"][i]] for i in range(len(labels))
    ]
    slice_rows = [
        [k, v["n"], v["accuracy"], (champion["slices"].get(k, {}).get("accuracy", "") if champion else "")]
        for k, v in slices.items()
    ]
    if champion:
        cmp_rows = [
            ["champion", champion["name"]],
            ["champion accuracy", champion["metrics"]["accuracy"]],
            ["challenger accuracy", metrics["accuracy"]],
            ["improvement", decision["bootstrap"].get("delta", "")],
            ["CI lower", decision["bootstrap"].get("lower", "")],
            ["CI upper", decision["bootstrap"].get("upper", "")],
            ["McNemar p", decision["mcnemar"].get("p_value", "")],
        ]
        cmp_html = _table(cmp_rows, ["", "value"])
    else:
        cmp_html = "<p>No champion yet: nothing to compare against.</p>"
    verdict = "PROMOTE" if decision["promote"] else "KEEP CHAMPION"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.verdict{{font-size:1.3em;font-weight:bold}}
.figs img{{margin:0 1em 1em 0;vertical-align:top}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="verdict">Decision: {verdict}</p><p>{html.escape(decision["reason"])}</p>
<h2>Metrics</h2>{_table(summary, ["metric", "value"])}
<h2>Per class</h2>{_table(per_class, ["label", "precision", "recall", "F1", "support"])}
<div class="figs">{_img(figs["confusion"])}{_img(figs["reliability"])}</div>
<h2>Slices</h2>{_table(slice_rows, ["slice", "n", "challenger accuracy", "champion accuracy"])}
{_img(figs["slices"])}
<h2>Champion vs challenger</h2>{cmp_html}
</body></html>"""
    report = out_dir / "report.html"
    report.write_text(page, encoding="utf-8")
    return {"report": report, **figs}
