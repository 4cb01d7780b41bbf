"""The stages of the ``lmchain_feedback`` DAG, one module per task, named as the task:

1. ``export``: the feedback the watermark does not cover yet, as a batch;
2. ``gate``: the GX ``feedback`` suite, row by row (failing rows are quarantined);
3. ``merge``: corrected labels into ``<home>/feedback/labels.jsonl``, then the watermark;
4. ``decide``: retrain or not, and why (a retrain is an event of the feedback-labels asset).

Each takes the whole recipe (``CONFIG = None``): label names, gate thresholds, the service's
store and ``feedback.*``. Their order is :data:`lmchain.stages.FEEDBACK`.
"""
