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
import random
import time
from pathlib import Path
from typing import Any

from lmchain.artifacts import Manifest, RunContext, StageOutput, read_jsonl, write_json
from lmchain.config import DeployConfig

CONFIG = "deploy"
READS = ("register", "gate_labels")
ASSETS = ("lmchain_champion_model",)

CHAMPION = "champion"

# Only for a run without a validation split (annotate.validation_fraction=0, or a manifest from
# before the split existed): the smoke check asks only that the service answers one prediction
# per text, so any text will do, and these two are what every run sent before the texts came
# from the task's own data.
FALLBACK_SMOKE_TEXTS = ["a gripping, beautifully acted film", "dull and far too long"]


def smoke_texts(cfg: DeployConfig, annotate: dict[str, Any]) -> tuple[list[str], str]:
    """The texts the smoke test sends, and where they came from (``config``, ``validation``,
    ``fallback``).

    Unless the recipe names its own, a seeded sample of the run's validation split: texts of the
    task's language, length and domain, that the model never trained on (a sentiment phrase
    tells nothing about a topic or a German classifier's service). Each is cut to what the service
    accepts, so a long document checks the service, not its size limit.
    """
    if cfg.smoke_texts:
        return list(cfg.smoke_texts), "config"
    path = (annotate.get("outputs") or {}).get("validation")
    texts = sorted({r["text"] for r in read_jsonl(path) if r.get("text")}) if path and Path(path).is_file() else []
    if not texts:
        return list(FALLBACK_SMOKE_TEXTS), "fallback"
    n = min(cfg.smoke_samples, cfg.service.max_texts_per_request, len(texts))
    # Sorted, then sampled with the recipe's seed: the same run data always smoke-tests the same texts.
    sample = random.Random(cfg.smoke_seed).sample(texts, n)
    return [t[: cfg.service.max_chars_per_text] for t in sample], "validation"


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
    smoke, smoke_source = smoke_texts(cfg, inputs["annotate"])
    probe = [r["text"] for r in test[:200]] or smoke

    validation = infra_validate(cfg, ctx, model_uri, variant, smoke, probe, expected)
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
        "smoke_source": smoke_source,
        "smoke": [{"text": t, **p} for t, p in zip(smoke, validation["smoke"]["predictions"])],
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
        out.manifest.counts = {"smoke_texts": len(smoke), "probe_requests": validation["probe_requests"]}
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
            "smoke_source": smoke_source,
            "predictions": [p["label"] for p in validation["smoke"]["predictions"]],
        }
    write_json(ctx.home.current_deployment, record)
    return out.manifest
