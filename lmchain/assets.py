"""The Airflow Assets that wire lmchain's DAGs; they appear in the UI's asset graph.

``lmchain_pipeline`` produces the curated corpus, the labelled set and the champion model;
``lmchain_feedback`` produces the feedback labels, whose events schedule the next pipeline run.
"""

from airflow.sdk import Asset

CURATED_CORPUS = Asset(name="lmchain_curated_corpus", uri="lmchain://corpus/curated")
LABELLED_SET = Asset(name="lmchain_labelled_set", uri="lmchain://labels/splits")
CHAMPION_MODEL = Asset(name="lmchain_champion_model", uri="lmchain://models/champion")
FEEDBACK_LABELS = Asset(name="lmchain_feedback_labels", uri="lmchain://feedback/labels")

# By name: what a stage module's ASSETS refer to.
BY_NAME = {a.name: a for a in (CURATED_CORPUS, LABELLED_SET, CHAMPION_MODEL, FEEDBACK_LABELS)}
