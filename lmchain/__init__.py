"""lmchain: Airflow DAGs that run the whole value chain of a language model.

Importing this package is cheap on purpose: DAG files import it at parse time, so heavy
libraries (torch, transformers, deepspeed, mlflow, great_expectations) are imported only
inside the stage functions that need them. The stages, one module per DAG task, and their order
are in :mod:`lmchain.stages`.
"""

__version__ = "0.1.0"
