"""Celery settings for Airflow's CeleryExecutor when it runs lmchain
(``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=lmchain.celery_config.CELERY_CONFIG``).

Airflow's defaults, plus one fix. Celery's prefork pool (billiard) installs its own process
object as ``multiprocessing.current_process()`` in each pool process, and Airflow forks every
task's process from a pool process, so the task inherits it. Python's multiprocessing cannot
start children from that object: it is marked daemonic ("daemonic processes are not allowed to
have children") and its authkey is billiard's type, which the spawn start method refuses to
pickle. lmchain's curate and crawl stages run process pools inside the task, so they failed
under Celery where LocalExecutor runs passed. Each pool process therefore gets a plain
multiprocessing identity when it starts; billiard keeps its own (``billiard.process``), which
is the one Celery uses.
"""

from __future__ import annotations

import multiprocessing.process

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_process_init

CELERY_CONFIG = dict(DEFAULT_CELERY_CONFIG)

# The standard library's main-process class (it deletes the name after creating its singleton).
# This module is imported by the worker's main process, before billiard forks the pool.
_PLAIN_PROCESS = type(multiprocessing.process.current_process())


@worker_process_init.connect
def plain_multiprocessing_identity(**_: object) -> None:
    if _PLAIN_PROCESS.__module__ == "multiprocessing.process":
        # private stdlib state (typeshed leaves it out): the singleton current_process() returns
        multiprocessing.process._current_process = _PLAIN_PROCESS()  # type: ignore[attr-defined]
    else:  # imported inside a pool process after all: at least let it start children
        # private stdlib state (typeshed leaves it out): the flags that make a process daemonic
        multiprocessing.process.current_process()._config.pop("daemon", None)  # type: ignore[attr-defined]
