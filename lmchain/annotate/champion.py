"""The current champion model as a scorer for pre-labels and the review queue (None without one)."""

from __future__ import annotations

import logging
from typing import Callable

from lmchain.artifacts import RunContext

log = logging.getLogger(__name__)


def champion_predict(
    ctx: RunContext, max_length: int = 64, batch_size: int = 128
) -> tuple[Callable[[list[str]], list[dict]] | None, dict]:
    """-> (``Predictor.predict`` of ``models:/<model>@champion``, info), or (None, why not).

    A first run has no champion, and a store that cannot be reached must not stop labelling:
    both give None with the reason, which the manifest records."""
    from lmchain.serve import registered

    try:
        found = registered.load(
            f"models:/{ctx.model_name}@champion", ctx.home, max_length=max_length, batch_size=batch_size
        )
    except Exception as exc:  # noqa: BLE001 - any store/model problem: label without the champion
        log.warning("annotate: champion of %s not usable: %s", ctx.model_name, exc)
        return None, {"champion": None, "reason": f"champion not usable: {exc}"[:300]}
    if found is None:
        return None, {"champion": None, "reason": f"no champion of {ctx.model_name} yet"}
    model, predictor = found
    return predictor.predict, {"champion": model.uri}
