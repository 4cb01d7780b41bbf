"""Failure notifications: a clear log line, and an optional webhook (``LMCHAIN_WEBHOOK_URL``).

Used as ``on_failure_callback`` of every lmchain task. The message is the user-facing one the
task recorded (``error.json``) when there is one, else the exception. A webhook that is down
is logged, never raised: notifying must not change the run's outcome.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

log = logging.getLogger("lmchain.notify")
WEBHOOK_ENV = "LMCHAIN_WEBHOOK_URL"


def failure_message(context: dict[str, Any]) -> dict[str, Any]:
    from lmchain.home import Home

    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = context.get("run_id", "?")
    error_file = Home.from_env().run_dir(run_id) / "error.json"
    detail = json.loads(error_file.read_text())["message"] if error_file.is_file() else str(context.get("exception"))
    return {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "try_number": getattr(ti, "try_number", None),
        "message": f"lmchain: {dag_id} run {run_id}: task {task_id} failed: {detail}",
    }


def on_failure(context: dict[str, Any]) -> None:
    payload = failure_message(context)
    log.error(payload["message"])
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        return
    try:
        req = urllib.request.Request(
            url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=5).close()
    except OSError as exc:
        log.error("lmchain: failure webhook %s did not answer: %s", url, exc)
