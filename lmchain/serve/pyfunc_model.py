"""MLflow "model from code": the registered model's pyfunc entry point.

Logged by the register stage with the fine-tuned folder as the artifact ``model_dir`` and the
lmchain package as code, so ``mlflow.pyfunc.load_model("models:/<name>@champion")`` (and
``mlflow models serve``) work without lmchain installed. lmchain's own service loads the same
artifact folder directly with :class:`~lmchain.serve.predictor.Predictor`.
"""

import mlflow
from mlflow.pyfunc import PythonModel


class TextClassifier(PythonModel):
    def load_context(self, context):
        from lmchain.serve.predictor import Predictor

        self.predictor = Predictor(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        texts = model_input["text"].astype(str).tolist() if hasattr(model_input, "columns") else list(model_input)
        return pd.DataFrame(self.predictor.predict(texts))


mlflow.models.set_model(TextClassifier())
