"""The service's request and response bodies (pydantic), as its OpenAPI page shows them.

The request models carry the configured limits (texts per request, characters per text), so they
are built per service by :func:`request_models`; the responses are fixed.
"""

from typing import Annotated, NamedTuple

from pydantic import BaseModel, Field, StringConstraints

from lmchain.config import ServeConfig


class Prediction(BaseModel):
    label: str
    label_id: int
    scores: dict[str, float]


class PredictResponse(BaseModel):
    request_id: str = Field(description="Quote it in /v1/feedback; predictions are stored under it.")
    model: str
    version: str
    variant: str
    predictions: list[Prediction]


class FeedbackResponse(BaseModel):
    feedback_id: str
    stored: bool
    text_sha256: str = Field(description="SHA-256 of the prediction's text, which the record holds.")
    predicted_label: str = Field(description="What the service answered for this prediction.")


class RequestModels(NamedTuple):
    predict: type[BaseModel]
    feedback: type[BaseModel]


def request_models(s: ServeConfig) -> RequestModels:
    """PredictRequest and FeedbackRequest with ``s``'s limits: pydantic rejects an oversized body
    (422) before a route runs."""
    Text = Annotated[str, StringConstraints(min_length=1, max_length=s.max_chars_per_text)]

    class PredictRequest(BaseModel):
        texts: list[Text] = Field(
            ...,
            min_length=1,
            max_length=s.max_texts_per_request,
            description=f"1 to {s.max_texts_per_request} texts of at most {s.max_chars_per_text} characters.",
        )

    class FeedbackRequest(BaseModel):
        request_id: str = Field(min_length=1, max_length=64, description="request_id that /v1/predict returned.")
        position: int = Field(0, ge=0, le=100_000, description="Index of the text in that request's texts.")
        correct_label: str = Field(min_length=1, max_length=200)
        comment: str | None = Field(None, max_length=2000)
        text: Text | None = Field(
            None,
            description="Needed only where the service keeps no texts "
            "(checked against the prediction's SHA-256); else optional "
            "and must equal the prediction's text.",
        )
        predicted_label: str | None = Field(
            None, max_length=200, description="Optional; must equal the service's answer."
        )

    return RequestModels(PredictRequest, FeedbackRequest)
