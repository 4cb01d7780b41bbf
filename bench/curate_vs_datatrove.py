"""Curation: lmchain vs datatrove on the same corpus, the same chain, 2 workers each.

Corpus (about 21k documents): the Python documentation's pages (Debian's python3.11-doc, text
extracted with ``lmchain.collect.extract``), the same pages cut into sections of 12 lines (web-
document-sized texts), SST-2 sentences (single sentences: the filters drop them), and edited
copies of sections with a known word-5-gram Jaccard similarity of 0.5 to 1.0 (near-duplicates).

Chain, with the published defaults: Gopher repetition, Gopher quality, C4 (with
``filter_no_terminal_punct=False``), FineWeb quality, then MinHash near-dup removal (word
5-grams, the same bands and rows). datatrove runs its four MinHash stages (signatures, buckets,
clusters, filter) with LocalPipelineExecutor; lmchain runs ``lmchain.stages.curate.curate_to`` with
normalisation, language id, PII and exact dedup switched off so that both do the same work.
Both read JSONL and write JSONL. Timing is wall clock of each whole run, process start-up of the
workers included.

It prints docs/s for each, the ratio, the keep/drop agreement of the filters (and of the final
output), near-duplicate precision/recall/F1 at J >= 0.8 on a labelled set beside datasketch's
MinHashLSH with the same parameters, and the peak memory (all processes) of lmchain curating
100k documents.

    .venv/bin/pip install -r bench/requirements.txt -c constraints.txt   # datatrove, spacy, datasketch
    .venv/bin/python bench/curate_vs_datatrove.py
    # ends with: RESULT curate ratio=... agreement=... docs_s=... datatrove_docs_s=...
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmchain.config import CurateConfig, build  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html")
WORKERS = 2
N_SST2 = int(os.environ.get("BENCH_CURATE_SST2", "6000"))
N_COPIES = int(os.environ.get("BENCH_CURATE_COPIES", "1500"))
MEMORY_DOCS = int(os.environ.get("BENCH_CURATE_MEMORY_DOCS", "100000"))
MAX_PAGES = int(os.environ.get("BENCH_CURATE_PAGES", "0"))  # 0: all (a quick smoke run uses a few)
NEAR = CurateConfig().near_dedup
CHAIN = {  # lmchain's CurateConfig for exactly datatrove's chain
    "normalize": False, "boilerplate": False, "min_chars": 0, "max_chars": 10**9, "min_words": 0,
    "language": {"enabled": False}, "pii": {"enabled": False}, "dedup": False,
    "c4": {"filter_no_terminal_punct": False}, "workers": WORKERS,
}


# ----------------------------------------------------------------------------- corpus


def _extract(path: str) -> str:
    from lmchain.collect.extract import extract

    return extract(Path(path).read_text(errors="replace"), "http://docs.local/" + path).text


def python_doc_pages() -> list[str]:
    if not DOCS.is_dir():
        sys.exit(f"{DOCS} is missing: apt-get install -y python3.11-doc")
    paths = sorted(str(p) for p in DOCS.rglob("*.html"))[:MAX_PAGES or None]
    with Pool(WORKERS) as pool:
        return [t for t in pool.map(_extract, paths, chunksize=8) if t]


def sst2_sentences(n: int) -> list[str]:
    from lmchain.datasets import sst2_dir

    rows = (sst2_dir(download=False) / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [r.split("\t")[0] for r in rows[:n]]


def sections(pages: list[str], lines: int = 12) -> list[str]:
    out = []
    for page in pages:
        page_lines = page.split("\n")
        out += ["\n".join(page_lines[i:i + lines]) for i in range(0, len(page_lines), lines)]
    return [s for s in out if s.strip()]


def build_corpus(pages: list[str], n_sst2: int, n_copies: int, seed: int = 0) -> list[dict]:
    from lmchain.curate.neardup_eval import edited_copy

    rng = random.Random(seed)
    secs = sections(pages)
    long_secs = [s for s in secs if len(s.split()) >= 60]
    copies = []
    for i in range(n_copies):
        base = long_secs[i % len(long_secs)]
        # keep line structure: edit words within lines so that the copy stays a web document
        copies.append("\n".join(edited_copy(line, rng.uniform(0.5, 1.0), rng) if len(line.split()) >= 5 else line
                                for line in base.split("\n")))
    texts = pages + secs + sst2_sentences(n_sst2) + copies
    return [{"id": f"d{i:07d}", "text": t} for i, t in enumerate(texts)]


def write_shards(corpus: list[dict], folder: Path, shards: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(corpus) // shards)
    for s in range(shards):
        with open(folder / f"part{s}.jsonl", "w", encoding="utf-8") as fh:
            for rec in corpus[s * size:(s + 1) * size]:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- the two chains


SENTENCES = {**CHAIN, "gopher_repetition": {"enabled": False}, "gopher_quality": {"enabled": False},
             "c4": {"enabled": False}, "fineweb": {"enabled": False}, "dedup": True}


def run_lmchain(corpus: list[dict], work: Path, chain: dict = CHAIN) -> tuple[float, set[str], set[str]]:
    """(seconds, ids kept by the filters, ids kept at the end)."""
    from lmchain.artifacts import read_jsonl
    from lmchain.stages.curate import curate_to

    src = work / "lm_in"
    write_shards(corpus, src, 1)
    shutil.move(src / "part0.jsonl", src / "records.jsonl")
    cfg = build(CurateConfig, chain, "curate")
    t0 = time.perf_counter()
    m = curate_to(cfg, src, work / "lm_out")
    seconds = time.perf_counter() - t0
    final = {r["id"] for r in read_jsonl(m.outputs["records"])}
    deduped = {r["id"] for r in read_jsonl(m.outputs["rejects"]) if r["reason"] == "near_duplicate"}
    return seconds, final | deduped, final


def run_datatrove(corpus: list[dict], work: Path) -> tuple[float, set[str], set[str]]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter)
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from loguru import logger

    logger.remove()  # datatrove logs every step of every task; keep the bench's output readable
    logger.add(sys.stderr, level="ERROR")
    src = work / "dt_in"
    write_shards(corpus, src, WORKERS)
    mc = MinhashConfig(n_grams=NEAR.ngram, num_buckets=NEAR.bands, hashes_per_bucket=NEAR.rows, seed=NEAR.seed)
    d = {k: str(work / "dt" / k) for k in ("filtered", "sigs", "buckets", "remove", "final", "logs")}
    stages = [
        ([JsonlReader(str(src)), GopherRepetitionFilter(), GopherQualityFilter(),
          C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(),
          JsonlWriter(d["filtered"], compression=None), MinhashDedupSignature(d["sigs"], config=mc)], WORKERS),
        ([MinhashDedupBuckets(d["sigs"], d["buckets"], config=mc)], mc.num_buckets),
        ([MinhashDedupCluster(d["buckets"], d["remove"], config=mc)], 1),
        ([JsonlReader(d["filtered"]), MinhashDedupFilter(d["remove"]), JsonlWriter(d["final"], compression=None)],
         WORKERS),
    ]
    t0 = time.perf_counter()
    for i, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(WORKERS, tasks),
                              logging_dir=f"{d['logs']}/{i}", skip_completed=False).run()
    seconds = time.perf_counter() - t0

    def ids(folder):
        return {json.loads(line)["id"] for p in Path(folder).glob("*.jsonl") for line in p.open()}

    return seconds, ids(d["filtered"]), ids(d["final"])


# ----------------------------------------------------------------------------- near-dup quality


def neardup_quality(pages: list[str]) -> dict:
    from datasketch import MinHash, MinHashLSH

    from lmchain.curate.minhash import MinHasher
    from lmchain.curate.neardup_eval import band_pairs, labelled_set, scores, true_pairs

    bases = [" ".join(s.split()[:300]) for s in sections(pages) if len(s.split()) >= 60]
    random.Random(1).shuffle(bases)
    texts, family = labelled_set(bases[:1000], copies_per_base=3, seed=0)
    truth, sims = true_pairs(texts, family, 0.8)
    hasher = MinHasher(NEAR.ngram, NEAR.bands, NEAR.rows, NEAR.seed)
    sigs = hasher.signatures(texts)
    candidates = band_pairs(hasher.band_keys(sigs))
    lsh_only = scores(candidates, truth, texts)
    # what the Deduper does with a candidate: keep the pair only if the signatures agree enough
    lm = scores({p for p in candidates if (sigs[p[0]] == sigs[p[1]]).mean() >= NEAR.threshold}, truth, texts)

    from lmchain.curate.neardup_eval import ngram_set

    num_perm = NEAR.bands * NEAR.rows
    lsh = MinHashLSH(num_perm=num_perm, params=(NEAR.bands, NEAR.rows))
    hashes = []
    for i, t in enumerate(texts):
        mh = MinHash(num_perm=num_perm, seed=NEAR.seed)
        mh.update_batch([" ".join(g).encode("utf-8") for g in ngram_set(t, NEAR.ngram)])
        lsh.insert(i, mh)
        hashes.append(mh)
    ds_pairs = {tuple(sorted((i, j))) for i, mh in enumerate(hashes) for j in lsh.query(mh) if j != i}
    ds = scores(ds_pairs, truth, texts)
    return {"docs": len(texts), "pairs": len(sims), "true_pairs": len(truth), "lmchain": lm,
            "lmchain_lsh_only": lsh_only, "datasketch": ds}


# ----------------------------------------------------------------------------- memory


def peak_memory_child(n_docs: int, work: Path, pages_file: Path, chain: str) -> dict:
    """Run in a fresh process: curate n_docs with the bench chain ("web") or with the web filters
    off ("sentences": nearly every text reaches the dedup index), sampling the RSS of this
    process and its workers together every 50 ms."""
    import psutil

    pages = json.loads(pages_file.read_text())
    base = build_corpus(pages, n_sst2=60000, n_copies=0)
    rng = random.Random(7)
    corpus = list(base)
    while len(corpus) < n_docs:  # fill with edited copies: new texts, some near-duplicates
        from lmchain.curate.neardup_eval import edited_copy

        rec = base[rng.randrange(len(base))]
        corpus.append({"id": f"m{len(corpus):07d}", "text": edited_copy(rec["text"], rng.uniform(0.3, 1.0), rng)})
    corpus = corpus[:n_docs]
    peak = [0]
    done = threading.Event()
    me = psutil.Process()

    def sample():
        while not done.is_set():
            try:
                total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            peak[0] = max(peak[0], total)
            time.sleep(0.05)

    del base, pages
    before = me.memory_info().rss
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    seconds, _, final = run_lmchain(corpus, work, CHAIN if chain == "web" else SENTENCES)
    done.set()
    thread.join()
    return {"chain": chain, "docs": len(corpus), "seconds": round(seconds, 1), "kept": len(final),
            "peak_rss_mib": round(peak[0] / 2**20), "rss_before_mib": round(before / 2**20)}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-curate-"))
    try:
        t = time.perf_counter()
        pages = python_doc_pages()
        corpus = build_corpus(pages, N_SST2, N_COPIES)
        print(f"corpus: {len(corpus)} documents ({len(pages)} Python doc pages, their 12-line sections, "
              f"{N_SST2} SST-2 sentences, {N_COPIES} edited copies), built in {time.perf_counter() - t:.0f}s")
        print(f"chain: Gopher repetition, Gopher quality, C4 (no terminal-punct rule), FineWeb, MinHash "
              f"{NEAR.ngram}-grams {NEAR.bands}x{NEAR.rows} (lmchain verifies candidates at {NEAR.threshold}); "
              f"{WORKERS} workers each", flush=True)

        lm_s, lm_filtered, lm_final = run_lmchain(corpus, work)
        print(f"lmchain:   {lm_s:7.1f}s  {len(corpus) / lm_s:8.0f} docs/s  filters keep {len(lm_filtered)}, "
              f"after dedup {len(lm_final)}", flush=True)
        dt_s, dt_filtered, dt_final = run_datatrove(corpus, work)
        print(f"datatrove: {dt_s:7.1f}s  {len(corpus) / dt_s:8.0f} docs/s  filters keep {len(dt_filtered)}, "
              f"after dedup {len(dt_final)}", flush=True)

        ids = [r["id"] for r in corpus]
        agree = sum((i in lm_filtered) == (i in dt_filtered) for i in ids) / len(ids)
        web = [r["id"] for r in corpus if len(r["text"].split()) >= 50]
        agree_web = sum((i in lm_filtered) == (i in dt_filtered) for i in web) / len(web)
        agree_final = sum((i in lm_final) == (i in dt_final) for i in ids) / len(ids)
        ratio = dt_s / lm_s
        print(f"ratio {ratio:.2f}x; filter keep/drop agreement {agree:.5f} (all), {agree_web:.5f} on the "
              f"{len(web)} documents of 50+ words; after dedup {agree_final:.5f} "
              f"(datatrove clusters transitively, lmchain keeps the first per cluster)")

        q = neardup_quality(pages)
        print(f"near-dup pairs at J >= 0.8 ({q['docs']} docs, {q['pairs']} labelled pairs, {q['true_pairs']} true; "
              f"{NEAR.bands} bands x {NEAR.rows} rows):")
        for name in ("lmchain", "lmchain_lsh_only", "datasketch"):
            r = q[name]
            print(f"  {name:17s} precision {r['precision']:.3f} recall {r['recall']:.3f} F1 {r['f1']:.3f} "
                  f"({r['predicted']} pairs predicted)")

        pages_file = work / "pages.json"
        pages_file.write_text(json.dumps(pages))
        mem, mem_sent = (json.loads(subprocess.run(
            [sys.executable, __file__, "--memory", str(MEMORY_DOCS), str(work / f"mem-{chain}"), str(pages_file),
             chain], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            for chain in ("web", "sentences"))
        print(f"memory, web chain: {mem}")
        print(f"memory, web filters off (most texts reach the dedup index): {mem_sent}")
        print(f"RESULT curate ratio={ratio:.2f} agreement={agree:.5f} docs_s={len(corpus) / lm_s:.0f} "
              f"datatrove_docs_s={len(corpus) / dt_s:.0f} agreement_web={agree_web:.5f} "
              f"neardup_f1={q['lmchain']['f1']} lsh_only_f1={q['lmchain_lsh_only']['f1']} "
              f"datasketch_f1={q['datasketch']['f1']} "
              f"peak_mib_{mem['docs'] // 1000}k={mem['peak_rss_mib']} "
              f"peak_mib_{mem_sent['docs'] // 1000}k_sentences={mem_sent['peak_rss_mib']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        folder = Path(sys.argv[3])
        folder.mkdir(parents=True, exist_ok=True)
        print(json.dumps(peak_memory_child(int(sys.argv[2]), folder, Path(sys.argv[4]), sys.argv[5])))
    else:
        main()
