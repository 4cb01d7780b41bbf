"""Labelling: importers (CSV/TSV/JSONL/Label Studio) and votes, aggregation (majority vote,
Dawid-Skene, agreement), labelling functions and the label model, the champion's pre-labels,
active-learning selection, stable hash splits and leakage checks. The ``annotate`` and
``review_queue`` stages that use them are :mod:`lmchain.stages.annotate` and
:mod:`lmchain.stages.review_queue`."""
