"""The ``deploy`` stage: pick the serving variant, validate the candidate in a real server
(:mod:`lmchain.serve.validation`), then move the alias.

The candidate is the version the register stage just registered when evaluation decided to
promote it, else the current champion (re-validated, since the serving stack may have changed).

1. Variant: each configured variant (fp32 PyTorch, ONNX Runtime fp32, ONNX Runtime int8) is
   scored on the test split; a variant is kept only if its accuracy is within
   ``max_accuracy_drop`` of fp32, and the fastest kept one (single-text latency) is tagged on
   the version as ``lmchain.serving_variant``, which ``lmchain serve --variant auto`` reads.
2. Infra validation: ``lmchain serve`` runs the candidate in a fresh process on a free port; the
   stage waits for ``/readyz``, sends the smoke texts, then times ``latency_probe_requests``
   single-text requests and checks their p95 against ``p95_slo_ms``; the served labels must
   equal the in-process labels of the same variant.
3. Only then is the candidate tagged ``lmchain.validated`` (an HMAC with the deploy key over the
   version's identity, the run and the time: see ``registry.mark_validated``) and ``champion``
   moved to it. Any failure raises, so the old champion keeps serving (a running service follows
   the alias and hot-swaps on its own, onto validated versions only).
"""

from __future__ import annotations

import json
import time

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, write_json
from lmchain.config import DeployConfig

CONFIG = "deploy"
READS = ("register", "gate_labels")
ASSETS = ("lmchain_champion_model",)

CHAMPION = "champion"


def run(cfg: DeployConfig, ctx: RunContext, inputs: dict) -> Manifest:
    import mlflow

    from lmchain import registry
    from lmchain.serve import registered
    from lmchain.serve.registered import VARIANT_TAG
    from lmchain.serve.validation import DeployFailed, choose_variant, infra_validate

    reg = inputs["register"]["info"]
    name = reg["model_name"]
    client = registry.client(ctx.home)
    previous = registry.champion(name, CHAMPION, home=ctx.home)
    promote = bool(reg["promoted"])
    candidate = str(reg["version"]) if promote else (str(previous.version) if previous else None)
    if candidate is None:
        raise DeployFailed(
            f"nothing to deploy: version {reg['version']} was not promoted and {name} has no champion yet"
        )
    model_uri = f"models:/{name}/{candidate}"
    model = registered.fetch(name, candidate, ctx.home)
    folder, tags = model.folder, model.tags

    test = list(read_jsonl(inputs["annotate"]["outputs"]["test"]))[: cfg.variant_eval_examples]
    report = json.loads(tags["lmchain.variant_report"]) if "lmchain.variant_report" in tags else None
    if report is None or tags.get(VARIANT_TAG) not in cfg.variants:
        variant, report = choose_variant(folder, test, cfg, ctx.home.variants)
        client.set_model_version_tag(name, candidate, VARIANT_TAG, variant)
        client.set_model_version_tag(
            name,
            candidate,
            "lmchain.variant_report",
            json.dumps({n: {k: v for k, v in r.items() if k != "labels"} for n, r in report.items()}),
        )
    else:
        variant = tags[VARIANT_TAG]
        report = {n: {**r, "labels": None} for n, r in report.items()}
    expected = report[variant].get("labels") or []
    probe = [r["text"] for r in test[:200]] or cfg.smoke_texts

    validation = infra_validate(cfg, ctx, model_uri, variant, probe, expected)
    # Tag first: a service that sees the alias move must find the tag already there.
    validated = registry.mark_validated(name, candidate, pipeline_run=ctx.run_id, home=ctx.home)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, candidate)

    summary = {n: {k: v for k, v in r.items() if k != "labels"} for n, r in report.items()}
    record = {
        "model_uri": f"models:/{name}@{CHAMPION}",
        "model": name,
        "version": candidate,
        "variant": variant,
        "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_id": ctx.run_id,
        "promoted": promote,
        "previous_champion": str(previous.version) if previous else None,
        "validated": {k: v for k, v in validated.items() if k != "hmac"},
        "smoke": [{"text": t, **p} for t, p in zip(cfg.smoke_texts, validation["smoke"]["predictions"])],
    }
    with registry.stage_run(ctx, ctx.experiment, "deploy"):
        mlflow.log_dict(
            {"variants": summary, "chosen": variant, **{k: v for k, v in validation.items() if k != "smoke"}},
            "deploy/validation.json",
        )
        mlflow.log_metrics(
            {
                "p95_ms": validation["p95_ms"],
                "p50_ms": validation["p50_ms"],
                "ready_seconds": validation["ready_seconds"],
            }
        )
    with StageOutput(ctx, "deploy", cfg.model_dump()) as out:
        write_json(out.output("smoke", "smoke.json"), record)
        write_json(out.output("validation", "validation.json"), {"variants": summary, "chosen": variant, **validation})
        out.manifest.inputs = {"model_uri": model_uri}
        out.manifest.counts = {"smoke_texts": len(cfg.smoke_texts), "probe_requests": validation["probe_requests"]}
        out.manifest.metrics = {
            "ready_seconds": validation["ready_seconds"],
            "p50_ms": validation["p50_ms"],
            "p95_ms": validation["p95_ms"],
            **{f"accuracy_{n.replace('-', '_')}": r["accuracy"] for n, r in summary.items()},
        }
        out.manifest.info = {
            "version": candidate,
            "model": name,
            "variant": variant,
            "promoted": promote,
            "previous_champion": record["previous_champion"],
            "ready": validation["ready"],
            "predictions": [p["label"] for p in validation["smoke"]["predictions"]],
        }
    write_json(ctx.home.current_deployment, record)
    return out.manifest
