"""``lmchain``: the command line.

    lmchain demo                 run lmchain_pipeline through Airflow on SST-2, print a summary
    lmchain run [--stages ...]   run stages in this process, without Airflow
    lmchain serve                serve models:/<name>@champion over HTTP
    lmchain feedback             run the feedback loop once (export, gate, merge, decide)
    lmchain feedback quarantine  list feedback rows the gate held; `release --run-id R --reason ...` frees them
    lmchain up                   Airflow, the MLflow UI and the service together, on 127.0.0.1
    lmchain config               show the resolved config, or every key with its doc
    lmchain lineage NAME[@alias|/version]   trace a model back to its source files
    lmchain gate --suite S --in PATH        validate a batch; --accept RUN_ID releases a quarantined one
    lmchain collect --seed URL ... --out DIR     crawl (polite, incremental, resumable) into DIR
    lmchain collect --source PATH_OR_GLOB --out DIR   read files, folders or saved datasets into DIR
    lmchain curate --in DIR --out DIR [--config FILE]   clean, filter, redact and dedup collected records
    lmchain env                  print the environment that points Airflow/MLflow at the lmchain home

Bad input ends with one line on stderr naming the file or key and what to do (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, cast

from lmchain.errors import LmchainError
from lmchain.home import Home
from lmchain.stages import STAGES


CRAWL_FLAGS: dict[str, str] = {}  # CrawlConfig field -> argparse dest, filled by _crawl_flags


def _crawl_flags(p: argparse.ArgumentParser) -> None:
    """``lmchain collect``'s crawl flags, from CrawlConfig: each field that names a ``cli`` flag,
    with the field's type and documentation. A list repeats; a switch sets the opposite of the
    field's default (``--ignore-robots``: respect_robots=false)."""
    import typing

    from lmchain.config import CrawlConfig

    for name, field in CrawlConfig.model_fields.items():
        flag = field.json_schema_extra.get("cli") if isinstance(field.json_schema_extra, dict) else None
        if not isinstance(flag, str):
            continue
        dest = CRAWL_FLAGS[name] = "crawl_" + name
        key, text, tp = f"collect.crawl.{name}", (field.description or "").replace("%", "%%"), field.annotation
        if tp is bool:
            value = not field.default
            p.add_argument(
                flag,
                dest=dest,
                action="store_const",
                const=value,
                default=None,
                help=f"sets {key} to {str(value).lower()} ({name}: {text})",
            )
        elif typing.get_origin(tp) is list:
            p.add_argument(
                flag, dest=dest, action="append", default=[], metavar=name.upper(), help=f"{text} ({key}; repeatable)"
            )
        else:
            while typing.get_origin(tp) is typing.Annotated:
                tp = typing.get_args(tp)[0]
            p.add_argument(
                flag, dest=dest, type=cast(Callable[[str], Any], tp), metavar=name.upper(), help=f"{text} ({key})"
            )


def _config_args(p: argparse.ArgumentParser, default_recipe: str | None = "demo") -> None:
    p.add_argument(
        "--recipe",
        "-r",
        default=default_recipe,
        help="YAML recipe: a name in configs/ (demo, tiny) or a path (default: %(default)s)",
    )
    p.add_argument(
        "--set",
        "-s",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set finetune.epochs=2 (repeatable)",
    )


def preflight(cfg) -> None:
    """Fail before starting anything when an input file is missing or unreadable."""
    from lmchain.sources.files import resolve_files

    for src in cfg.collect.files:
        resolve_files(src.path, src.format)
    for label_src in cfg.annotate.labels:
        resolve_files(label_src.path)


def cmd_demo(args) -> int:
    import time

    from lmchain import airflow_env
    from lmchain.config import load_config
    from lmchain.dagrun import run_pipeline_dag
    from lmchain.home import HOME_ENV

    t0 = time.perf_counter()
    lm_home = Home.from_env()
    airflow_env.apply(lm_home)
    cfg = load_config(args.recipe, args.overrides)
    preflight(cfg)
    print(f"lmchain demo: {HOME_ENV}={lm_home}, recipe {args.recipe}", flush=True)
    airflow_env.ensure_db(lm_home)
    report = run_pipeline_dag(args.recipe, args.overrides)
    from lmchain.summary import print_summary

    print_summary(report, lm_home, total_seconds=time.perf_counter() - t0)
    return 0


def cmd_run(args) -> int:
    from datetime import datetime, timezone

    from lmchain import airflow_env
    from lmchain.config import load_config
    from lmchain.stages.runner import run_all

    lm_home = Home.from_env()
    airflow_env.apply(lm_home)
    cfg = load_config(args.recipe, args.overrides)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise LmchainError(f"unknown stage(s) {unknown}; stages are: {', '.join(STAGES)}")
    preflight(cfg)
    run_id = args.run_id or "cli_" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    done = run_all(cfg, run_id, stages, lm_home)
    for stage, m in done.items():
        print(f"{stage:9s} counts={m['counts']} metrics={m['metrics']}")
    print(f"run folder: {lm_home.run_dir(run_id)}")
    return 0


def cmd_serve(args) -> int:
    if args.new_api_key or args.new_admin_key:
        from lmchain.serve.auth import new_key

        key, line = new_key()
        if args.new_admin_key:
            print(f"admin key (for /v1/admin/* only; keep it off clients; it is not stored): {key}")
            print(f"hash (add this line to the admin key file or to LMCHAIN_ADMIN_KEY_HASHES): {line}")
        else:
            print(f"API key (give it to the client; it is not stored): {key}")
            print(f"hash (add this line to the key file or to LMCHAIN_API_KEY_HASHES): {line}")
        return 0
    import uvicorn

    from lmchain import airflow_env
    from lmchain.config import load_config, replace
    from lmchain.serve.app import create_app

    lm_home = Home.from_env()
    airflow_env.apply(lm_home)
    settings = load_config(args.recipe, args.overrides).deploy.service
    given = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "variant": args.variant,
            "api_keys_file": args.api_keys_file,
            "admin_keys_file": args.admin_keys_file,
            "insecure_open": args.insecure_open or None,
        }.items()
        if v is not None
    }
    settings = replace(settings, **given)
    model_dir = args.model_dir
    uri = None if model_dir else (args.model_uri or _champion_uri(args.model_name, lm_home, settings.follow_alias_s))
    # create_app refuses an open, exposed service before anything binds.
    app = create_app(uri, settings, model_dir=model_dir, home=lm_home)
    what = uri or model_dir or "the first deployment"
    print(f"lmchain serve: {what} on http://{settings.host}:{settings.port} (docs at /docs)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    return 0


def cmd_feedback(args) -> int:
    from lmchain import airflow_env
    from lmchain.artifacts import RunContext
    from lmchain.config import load_config
    from lmchain.dagrun import run_feedback_dag

    lm_home = Home.from_env()
    if args.action == "quarantine":
        return _feedback_quarantine(lm_home)
    if args.action == "release":
        return _feedback_release(lm_home, args)
    if args.run_id or args.reason or args.drop:
        raise LmchainError("--run-id, --reason and --drop go with `lmchain feedback release`")
    airflow_env.apply(lm_home)
    load_config(args.recipe, args.overrides)  # a bad key fails here, with its name
    airflow_env.ensure_db(lm_home)
    report, events = run_feedback_dag(args.recipe, args.overrides)
    decision_file = RunContext(report.run_id, home=lm_home).stage_dir("feedback_decide") / "decision.json"
    decision = json.loads(decision_file.read_text()) if decision_file.is_file() else {}
    print(f"lmchain_feedback run {report.run_id}: {report.state} in {report.wall_seconds}s")
    for t in report.tasks:
        print(f"  {t['task_id']:8s} {t['state']}")
    print(f"decision: {'retrain' if decision.get('trigger') else 'wait'}: {decision.get('reason', '?')}")
    for e in events:
        print(f"asset event {e['asset']}: {e['extra'].get('reason')} (schedules lmchain_pipeline)")
    gate_manifest = RunContext(report.run_id, home=lm_home).stage_dir("feedback_gate") / "manifest.json"
    held = json.loads(gate_manifest.read_text())["info"].get("quarantined_rows") if gate_manifest.is_file() else 0
    if held:
        print(
            f"quarantined: {held} feedback rows held; see `lmchain feedback quarantine`, release with "
            f"`lmchain feedback release --run-id {report.run_id} --reason ...`"
        )
    return 0


def _feedback_quarantine(lm_home: Home) -> int:
    """List held feedback rows: row numbers, store ids and reasons (texts stay in the quarantine)."""
    from lmchain.feedback.quarantine import summary

    held = summary(lm_home)
    if not held:
        print(f"no feedback rows in quarantine under {lm_home.quarantine}")
    for q in held:
        rel = q["release"]
        state = (
            "held"
            if rel is None
            else (
                f"released by {rel['released_by']} on {rel['released_at']} "
                f"({rel['reason']!r}), dropped {rel['dropped_rows'] or 'none'}, "
                + (f"merged in {rel['merged_in']}" if rel.get("merged_in") else "merges in the next feedback run")
            )
        )
        print(f"run {q['run_id']}: {len(q['rows'])} rows, {state}; rows in {q['folder']}/rows.jsonl")
        for r in q["rows"]:
            print(f"  row {r['row']:>5} store id {r['store_id']}: {', '.join(r['reasons'])}")
    return 0


def _feedback_release(lm_home: Home, args) -> int:
    from lmchain.feedback.quarantine import release

    if not args.run_id:
        raise LmchainError("lmchain feedback release needs --run-id RUN (see `lmchain feedback quarantine`)")
    path = release(lm_home, args.run_id, args.reason or "", args.drop)
    record = json.loads(path.read_text())
    print(
        f"released {len(record['released_rows'])} rows of run {args.run_id} (dropped "
        f"{record['dropped_rows'] or 'none'}); recorded in {path}. They merge in the next feedback run "
        "(`lmchain feedback`, or the schedule)"
    )
    return 0


def _champion_uri(model_name: str | None, lm_home: Home, follow_alias_s: float) -> str | None:
    """The model the last deploy smoke-tested; None (the service waits for the first deploy's
    record, answering /readyz with 503 until then) when nothing was deployed yet."""
    if model_name:
        return f"models:/{model_name}@champion"
    current = lm_home.current_deployment
    if current.is_file():
        return json.loads(current.read_text())["model_uri"]
    if follow_alias_s <= 0:  # nothing would ever notice the first deploy
        raise LmchainError(
            f"no deployment found in {current}, and deploy.service.follow_alias_s is 0: run `lmchain demo` "
            "first, or pass --model-uri models:/<name>@champion"
        )
    print(
        f"lmchain serve: no deployment yet ({current}): /readyz answers 503 until the pipeline deploys a "
        "champion, which the service then loads (or pass --model-uri / --model-name)",
        flush=True,
    )
    return None


def cmd_up(args) -> int:
    from lmchain.up import run_services

    return run_services(args.airflow_port, args.mlflow_port, args.serve_port, host=args.host)


def cmd_config(args) -> int:
    from lmchain.config import describe, load_config

    if args.keys:
        for key, doc, default in describe():
            print(f"{key:34s} {json.dumps(default):>26s}  {doc}")
        return 0
    import yaml

    print(yaml.safe_dump(load_config(args.recipe, args.overrides).to_dict(), sort_keys=False))
    return 0


def cmd_lineage(args) -> int:
    from mlflow.exceptions import MlflowException

    from lmchain import airflow_env, registry
    from lmchain.lineage import describe_version

    lm_home = Home.from_env()
    airflow_env.apply(lm_home)
    ref = args.model
    client = registry.client(lm_home)
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        elif "/" in ref:
            name, number = ref.rsplit("/", 1)
            version = client.get_model_version(name, number)
        else:
            name, version = ref, client.get_model_version_by_alias(ref, "champion")
    except MlflowException as exc:
        raise LmchainError(f"no model version '{ref}' in {lm_home.tracking_uri}: {exc.message}") from None
    print("\n".join(describe_version(name, version)))
    return 0


def cmd_gate(args) -> int:
    """Validate a batch with one suite, or release a quarantined batch (--accept RUN_ID)."""
    import json as _json

    from lmchain import airflow_env
    from lmchain.artifacts import RunContext
    from lmchain.config import load_config
    from lmchain.errors import GateFailed
    from lmchain.quality.checks import check
    from lmchain.quality.batches import labelled_files, labelled_frame, records_frame
    from lmchain.quality.gate import accept

    lm_home = Home.from_env()
    airflow_env.apply(lm_home)
    if args.accept:
        record = accept(lm_home, args.accept, args.suite, args.reason or "")
        print(f"accepted the quarantined {args.suite} batch of run {args.accept}: {record}")
        print("re-run the run's gate task (Airflow: clear it) to continue with this batch")
        return 0
    if not args.input:
        raise LmchainError(
            "give --in PATH (a file, or a folder of train/validation/test.jsonl for 'labelled'), or --accept RUN_ID"
        )
    cfg = load_config(args.recipe, args.overrides)
    path = Path(args.input)
    names = list(cfg.annotate.entity_types or cfg.annotate.label_names)
    task = cfg.task
    if args.suite == "labelled":
        files = labelled_files(path)
        if (path / "labels.json").is_file():
            labels = _json.loads((path / "labels.json").read_text())
            names, task = labels["names"], labels.get("task", task)
        batch = {"labelled": (labelled_frame(files), list(files.values()))}
    else:
        batch = {args.suite: (records_frame(path), [path])}
    ctx = RunContext(
        args.run_id or f"cli_gate_{args.suite}",
        home=lm_home,
        experiment=cfg.register.experiment,
        model_name=cfg.register.model_name,
    )
    try:
        m = check(ctx, f"gate_{args.suite}_cli", cfg.gate, batch, names, {}, task=task)
    except GateFailed as exc:
        print(f"BLOCKED: {exc}", file=sys.stderr)
        return 1
    print(
        f"PASSED: suite {args.suite}, {m.counts['expectations']} expectations, {m.counts['warnings']} warnings; "
        f"Data Docs: {m.info['data_docs']}"
    )
    return 0


def cmd_collect(args) -> int:
    """Collect into --out DIR with the collect stage's own code and config (CollectConfig)."""
    import logging

    from lmchain.stages.collect import collect_to
    from lmchain.config import CollectConfig, build, parse_overrides

    crawl = {name: getattr(args, dest) for name, dest in CRAWL_FLAGS.items() if getattr(args, dest) not in (None, [])}
    data: dict[str, Any] = {"files": [{"path": s, "text_field": args.text_field} for s in args.source], "crawl": crawl}
    extra = parse_overrides(args.overrides)
    unknown = [k for k in extra if k != "collect"]
    if unknown:
        raise LmchainError(f"lmchain collect takes collect.* overrides only, not {unknown}")
    collect = extra.get("collect", {})
    data["crawl"].update(collect.pop("crawl", {}))
    data.update(collect)
    cfg = build(CollectConfig, data, "collect")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    m = collect_to(cfg, args.out, Home.from_env())
    print(
        f"collect: {m.counts.get('records', 0)} records, {m.counts.get('rejects', 0)} rejects "
        f"{m.drop_reasons or ''} in {m.duration_s:.1f}s -> {Path(args.out).resolve()}"
    )
    if "crawl" in m.info:
        c = m.info["crawl"]
        print(
            f"crawl {c['crawl_id']} ({c['state']}): statuses {c['statuses']}, unchanged "
            f"{m.counts.get('crawl_unchanged', 0)}, queued left {m.counts.get('crawl_queued_left', 0)}, "
            f"{c['pages_per_s']} pages/s; state {c['state_path']}"
        )
    return 0


def cmd_curate(args) -> int:
    """Curate collected records (--in: a records.jsonl or collect's folder) into --out DIR."""
    import logging

    from lmchain.config import CurateConfig, build, load_config, parse_overrides
    from lmchain.stages.curate import curate_to

    if args.config:
        cfg = load_config(args.config, args.overrides).curate
    else:
        extra = parse_overrides(args.overrides)
        unknown = [k for k in extra if k != "curate"]
        if unknown:
            raise LmchainError(f"lmchain curate takes curate.* overrides only, not {unknown}")
        cfg = build(CurateConfig, extra.get("curate", {}), "curate")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    m = curate_to(cfg, args.input, args.out, Home.from_env())
    print(
        f"curate: {m.counts['input']} in -> {m.counts['records']} kept, {m.counts['rejects']} rejected "
        f"{m.drop_reasons or ''} in {m.duration_s:.1f}s ({m.metrics['docs_per_second']:.0f} docs/s) "
        f"-> {Path(args.out).resolve()}"
    )
    return 0


def cmd_ner(args) -> int:
    """Fine-tune a token classifier (BIO tags) on CoNLL files with the recipe's finetune settings,
    or tag sentences with a trained one."""
    from lmchain.train.ner import Tagger, train_tagger

    if args.model:
        tagger = Tagger(args.model)
        for text in args.text:
            words = text.split()
            print(" ".join(f"{w}/{t}" for w, t in zip(words, tagger.tag([words])[0])))
        return 0
    if not (args.train and args.out):
        raise LmchainError("lmchain ner: give --train FILE --out DIR to train, or --model DIR --text '...' to tag")
    from lmchain.config import load_config, replace
    from lmchain.train import models

    cfg = load_config(args.recipe, args.overrides).finetune
    base = cfg.base_model if cfg.base_model != "pretrain" else "minilm"
    out = Path(args.out)
    metrics = train_tagger(
        replace(cfg, base_model=base), models.resolve(base), args.train, args.validation, out / "model", out / "job"
    )
    best = (
        f", best validation entity F1 {metrics['best_macro_f1']:.4f} at step {metrics['best_step']}"
        if "best_macro_f1" in metrics
        else ""
    )
    print(f"ner: {metrics['steps']} steps in {metrics['train_seconds']:.0f}s{best} -> {out / 'model'}")
    return 0


def cmd_env(args) -> int:
    from lmchain.airflow_env import airflow_env

    for key, value in airflow_env(Home.from_env()).items():
        print(f"export {key}={os.environ.get(key, value)!s}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from lmchain.config import GateConfig, ServeConfig, choices

    parser = argparse.ArgumentParser(prog="lmchain", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run lmchain_pipeline through Airflow and print a summary")
    _config_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run stages in this process, without Airflow")
    _config_args(p)
    p.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)}")
    p.add_argument("--run-id", help="reuse a run folder (stages not run are read from it)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="serve the champion model over HTTP (settings: deploy.service.*)")
    _config_args(p)
    p.add_argument("--host", help="default: deploy.service.host")
    p.add_argument("--port", type=int, help="default: deploy.service.port")
    p.add_argument(
        "--model-uri", help="models:/<name>@<alias> (followed: hot-swaps when it moves) or models:/<name>/<version>"
    )
    p.add_argument("--model-name", help="serve models:/<name>@champion")
    p.add_argument("--model-dir", help="serve a local transformers folder instead of a registered model")
    p.add_argument(
        "--variant",
        choices=choices(ServeConfig, "variant"),
        help="default: deploy.service.variant ('auto': what the deploy stage chose)",
    )
    p.add_argument("--api-keys-file", help="file of 'sha256:<hex>' key hashes (default: deploy.service.api_keys_file)")
    p.add_argument(
        "--admin-keys-file", help="file of admin key hashes, for /v1/admin/* (default: deploy.service.admin_keys_file)"
    )
    p.add_argument(
        "--insecure-open",
        action="store_true",
        help="allow a non-loopback --host without API keys (anyone who reaches it may use it)",
    )
    p.add_argument("--new-api-key", action="store_true", help="print a new API key and its hash, then exit")
    p.add_argument("--new-admin-key", action="store_true", help="print a new admin key and its hash, then exit")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "feedback",
        help="run lmchain_feedback once: export, gate and merge feedback, decide; "
        "or list / release quarantined feedback rows",
    )
    _config_args(p)
    p.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=["run", "quarantine", "release"],
        help="run (default): one run of the DAG; quarantine: list held rows; release: release a run's "
        "held rows for the next merge",
    )
    p.add_argument("--run-id", help="release: the feedback run whose held rows to release")
    p.add_argument("--reason", help="release: why (required; recorded with who and when)")
    p.add_argument(
        "--drop",
        type=int,
        nargs="+",
        default=[],
        metavar="ROW",
        help="release: row numbers (from `lmchain feedback quarantine`) to leave out for good",
    )
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("up", help="start the Airflow UI, the MLflow UI and the service (on 127.0.0.1)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address all three listen on (default 127.0.0.1: this machine only). Another address "
        "opens them to the network: MLflow then runs its basic-auth app and the service needs "
        "API keys (README: Deploying safely)",
    )
    p.add_argument("--airflow-port", type=int, default=8080)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--serve-port", type=int, default=8000)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("config", help="print the resolved config (or --keys: every key with its doc)")
    _config_args(p)
    p.add_argument("--keys", action="store_true")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("lineage", help="trace a registered model back to its source files and URLs")
    p.add_argument("model", help="NAME (its champion), NAME@alias or NAME/version")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("gate", help="validate a batch with a GX suite, or release a quarantined batch")
    _config_args(p)
    p.add_argument("--suite", default="curated", choices=list(GateConfig.model_fields))
    p.add_argument("--in", dest="input", help="batch file (jsonl/csv/tsv), or a folder of splits for 'labelled'")
    p.add_argument("--run-id", help="run id the batch belongs to (names its quarantine folder)")
    p.add_argument("--accept", metavar="RUN_ID", help="release the quarantined batch of RUN_ID for --suite")
    p.add_argument("--reason", help="why the batch is accepted (recorded; required with --accept)")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("collect", help="crawl sites or read files into records.jsonl (the collect stage)")
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="PATH_OR_GLOB",
        help="file, folder, glob or saved dataset to read (repeatable)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced when the run ends)")
    p.add_argument("--text-field", default="text", help="column holding the text in --source tables")
    _crawl_flags(p)
    p.add_argument(
        "--set",
        "-s",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any collect key, e.g. --set collect.crawl.retries=5 (repeatable)",
    )
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("curate", help="normalise, filter, redact PII and dedup records (the curate stage)")
    p.add_argument(
        "--in", dest="input", required=True, metavar="DIR", help="collect's output folder, or a records.jsonl"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced when the run ends)")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML recipe whose curate: section to use (a name in configs/ "
        "or a path; default: CurateConfig's defaults)",
    )
    p.add_argument(
        "--set",
        "-s",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any curate key, e.g. --set curate.c4.enabled=false (repeatable)",
    )
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("ner", help="train a BIO token classifier on CoNLL files, or tag text with one")
    _config_args(p)
    p.add_argument("--train", metavar="FILE", help="CoNLL file: 'token ... tag' per line, blank line between sentences")
    p.add_argument("--validation", metavar="FILE", help="CoNLL file scored during training (best F1 kept)")
    p.add_argument("--out", metavar="DIR", help="where the model and job logs go")
    p.add_argument("--model", metavar="DIR", help="a trained tagger's model folder: tag --text with it")
    p.add_argument("--text", action="append", default=[], help="a sentence to tag (repeatable; words split on spaces)")
    p.set_defaults(func=cmd_ner)

    p = sub.add_parser("env", help="print exports that point Airflow and MLflow at the lmchain home")
    p.set_defaults(func=cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LmchainError as exc:
        print(f"lmchain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
