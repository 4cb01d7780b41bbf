"""A registered model, from a ``models:/`` reference to a local folder and a predictor.

The one path by which lmchain loads a model out of the registry for inference: the evaluate stage
(the champion it compares against), the annotate stage (the champion's pre-labels), the deploy
stage (the candidate it validates) and the service (the version it serves). So each gets the
same files, from the same per-home download cache, the same way; what the evaluate stage
measured is what the service answers with.

It lives in ``serve/`` beside :mod:`~lmchain.serve.predictor` and :mod:`~lmchain.serve.variants`,
which build the predictor, and says "registered" rather than "champion" since the deploy stage and
a pinned service load a given version, not the alias. A fine-tuned folder that is not registered
(the evaluate stage's challenger, ``lmchain serve --model-dir``) goes to ``variants.load`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmchain.home import Home
from lmchain.serve.predictor import BasePredictor

# Set by the deploy stage on a version: the variant it measured fastest within the accuracy
# budget, which a service asked for variant 'auto' serves.
VARIANT_TAG = "lmchain.serving_variant"


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    folder: Path  # the local transformers folder (config, weights, tokenizer)
    tags: dict[str, str] = field(default_factory=dict)  # the version's tags when it was resolved

    @property
    def uri(self) -> str:
        """The version's own URI (``models:/name/version``), stable where an alias moves."""
        return f"models:/{self.name}/{self.version}"

    def variant(self, requested: str = "fp32") -> str:
        """``requested``, or with 'auto' the variant the deploy stage tagged (fp32 without one)."""
        return self.tags.get(VARIANT_TAG, "fp32") if requested == "auto" else requested


def parse(ref: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/version`` -> (name, None, version)."""
    body = ref.removeprefix("models:/")
    if not ref.startswith("models:/") or not ("@" in body or "/" in body):
        raise ValueError(f"model URI {ref!r} must look like models:/<name>@<alias> or models:/<name>/<version>")
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, alias, None
    name, version = body.rsplit("/", 1)
    return name, None, version


def resolve(ref: str, home: Home | None = None) -> RegisteredModel | None:
    """The version ``ref`` names, with its files (see :func:`fetch`). None when ``ref`` is an alias
    that holds no version (a first run has no champion); a missing fixed version raises."""
    from lmchain import registry

    home = Home.of(home)
    name, alias, version = parse(ref)
    if alias is None:
        assert version is not None
        return fetch(name, version, home)
    held = registry.champion(name, alias, home)
    if held is None:
        return None
    return fetch(name, str(held.version), home, tags=held.tags)


def fetch(name: str, version: str, home: Home | None = None, tags: dict[str, str] | None = None) -> RegisteredModel:
    """Version ``version`` of ``name``, its files downloaded once per version into the home's cache
    (:func:`lmchain.registry.resolve_model`); its tags are read from the registry unless given."""
    from lmchain import registry

    home = Home.of(home)
    folder = registry.resolve_model(f"models:/{name}/{version}", home)[2]  # first: a missing version fails here
    if tags is None:
        tags = registry.client(home).get_model_version(name, version).tags
    return RegisteredModel(name, str(version), folder, dict(tags or {}))


def load(
    ref: str,
    home: Home | None = None,
    *,
    variant: str = "fp32",
    max_length: int = 128,
    batch_size: int = 64,
    threads: int | None = None,
) -> tuple[RegisteredModel, BasePredictor] | None:
    """:func:`resolve`, then its predictor in ``variant`` ('auto': the deploy stage's choice);
    None when the alias holds no version. ONNX variants are built (once) in the home's cache."""
    from lmchain.serve import variants

    home = Home.of(home)
    model = resolve(ref, home)
    if model is None:
        return None
    predictor = variants.load(
        model.folder,
        model.variant(variant),
        max_length=max_length,
        batch_size=batch_size,
        threads=threads,
        cache=home.variants,
    )
    return model, predictor
