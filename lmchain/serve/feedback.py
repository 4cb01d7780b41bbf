"""Feedback tied to real predictions: what a /v1/feedback post may say, and what is stored.

A feedback names a prediction the service made: the ``request_id`` that /v1/predict returned
and the ``position`` of the text in that request (default 0). The stored record takes the
text, the predicted label, the model and the version from that prediction, never from the
client: feedback labels become training labels, so a client must not be able to attach a
label to a text the model never saw, or claim the model said something it did not. A client
may still send ``text`` and ``predicted_label``; if they disagree with the prediction, the post
is refused (422) rather than silently corrected, since a disagreeing client is a bug or a forgery.
When the service does not keep texts (``store_texts`` off), the client must send the text, and
it is checked against the prediction's stored SHA-256.

One feedback per prediction, and a second one is refused with 409 instead of replacing the
first: a label that can be replaced can be flipped silently (by a retry, a second user of the
same key, or an attacker who saw the request_id), while a refusal leaves the first label and
an audit trail of who tried again. A unique index on (request_id, position) enforces it in the
database, so two racing posts cannot both land. A correction of a correction is a new prediction.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from lmchain.artifacts import sha256_text


class FeedbackRejected(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _prediction(store, request_id: str, position: int) -> dict[str, Any]:
    rows = store.lookup(request_id)
    if not rows:
        raise FeedbackRejected(
            404,
            "no prediction has this request_id: send the request_id that /v1/predict "
            "returned (feedback must name a prediction this service made)",
        )
    if position not in rows:
        raise FeedbackRejected(
            404,
            f"this request has {len(rows)} prediction(s), at positions 0 to "
            f"{len(rows) - 1}; position {position} is not one of them",
        )
    return rows[position]


def _text(prediction: dict[str, Any], sent: str | None) -> str:
    stored = prediction.get("text")
    if stored is not None:
        if sent is not None and sent != stored:
            raise FeedbackRejected(
                422,
                "text differs from the text of this prediction; leave it out (the service "
                "records the text it classified)",
            )
        return stored
    if sent is None:
        raise FeedbackRejected(
            422,
            "this service does not keep prediction texts (deploy.service.store_texts is "
            "off): send the text you sent to /v1/predict; it is checked against its SHA-256",
        )
    if sha256_text(sent) != prediction["text_sha256"]:
        raise FeedbackRejected(422, "text is not the text of this prediction (its SHA-256 differs)")
    return sent


def feedback_record(
    store,
    request_id: str,
    position: int,
    correct_label: str,
    labels: list[str],
    *,
    text: str | None = None,
    predicted_label: str | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """The record to store for one post; raises FeedbackRejected with the status and why."""
    prediction = _prediction(store, request_id, position)
    if correct_label not in labels:
        raise FeedbackRejected(422, f"correct_label is not one of the model's labels {labels}")
    if predicted_label is not None and predicted_label != prediction["label"]:
        raise FeedbackRejected(
            422,
            f"predicted_label disagrees with the service's answer for this prediction "
            f"({prediction['label']!r}); leave it out (the service records its own answer)",
        )
    return {
        "feedback_id": uuid.uuid4().hex,
        "created_at": time.time(),
        "request_id": request_id,
        "position": position,
        "text": _text(prediction, text),
        "text_sha256": prediction["text_sha256"],
        "predicted_label": prediction["label"],
        "correct_label": correct_label,
        "comment": comment,
        "model": prediction["model"],
        "version": prediction["version"],
    }
