"""Serving: predictors and their ONNX variants, the FastAPI service (micro-batching, hot swap,
metrics, API keys, prediction/feedback store) and the deploy stage's infra validation."""
