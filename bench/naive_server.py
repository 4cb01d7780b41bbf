"""The baseline of bench/serve_load.py: what a team would write first.

FastAPI + a transformers ``pipeline("text-classification")`` on the same model folder, one
model call per request in FastAPI's thread pool, PyTorch fp32. Same request and response shape
as ``lmchain serve``'s ``/v1/predict``.

    python bench/naive_server.py MODEL_DIR PORT
"""

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

model_dir, port = sys.argv[1], int(sys.argv[2])
classifier = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1, top_k=None)
app = FastAPI()


class PredictRequest(BaseModel):
    texts: list[str]


@app.get("/readyz")
def readyz():
    return {"status": "ready"}


@app.post("/v1/predict")
def predict(req: PredictRequest):
    out = classifier(req.texts, truncation=True, max_length=128)
    return {"predictions": [{"label": max(s, key=lambda x: x["score"])["label"],
                             "scores": {x["label"]: x["score"] for x in s}} for s in out]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
