"""lmchain: Airflow DAGs that run the whole value chain of a language model.

Importing this package is cheap on purpose: DAG files import it at parse time, so heavy
libraries (torch, transformers, deepspeed, mlflow, great_expectations) are imported only
inside the stage functions that need them.
"""

__version__ = "0.1.0"

STAGES = (
    "collect",
    "curate",
    "gate",
    "annotate",
    "review_queue",
    "gate_labels",
    "pretrain",
    "finetune",
    "evaluate",
    "register",
    "deploy",
)
