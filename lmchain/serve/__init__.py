"""Serving: the predictor, the FastAPI app and the deploy stage's smoke test."""
