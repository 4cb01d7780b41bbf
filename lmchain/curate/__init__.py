"""Curating text: normalisation, language id, quality filters, PII redaction, exact and near-dup
dedup (:mod:`lmchain.curate.pipeline` runs the steps over chunks). The ``curate`` stage that
uses them is :mod:`lmchain.stages.curate`."""
