"""What every config section shares: documented fields, strict validation, and errors that name
the dotted key.

A section is a pydantic model: choices are ``Literal[...]``, ranges ``Field(ge=..., le=...)``,
checks across fields model validators. Unknown keys are errors (``extra="forbid"``) and values
are not coerced (``strict``: ``"2"`` is not an int, ``true`` is not 1), as before. Validation
collects every problem; :func:`error_message` turns them into one message, one line per key,
with "did you mean" for unknown keys and choices.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, ClassVar, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from lmchain.errors import ConfigError

__all__ = ["Field", "Section", "build", "choices", "doc", "error_message", "model_validator", "problems", "replace"]


def doc(
    text: str,
    default: Any = ...,
    *,
    factory: Any = None,
    hint: str | None = None,
    cli: str | None = None,
    **constraints: Any,
):
    """A field with its documentation (the ``description`` that ``lmchain config --keys`` and the
    trigger form show); ``hint`` follows a range error (``must be >= 0 (0: automatic)``); ``cli``
    is the field's command-line flag, where a command generates its flags from the model
    (``lmchain collect``'s crawl flags)."""
    extra: dict[str, JsonValue] | None = {k: v for k, v in (("hint", hint), ("cli", cli)) if v} or None
    if factory is not None:
        return Field(default_factory=factory, description=text, json_schema_extra=extra, **constraints)
    return Field(default, description=text, json_schema_extra=extra, **constraints)


class Section(BaseModel):
    """A config section. ``KEY`` is where it sits in a recipe, so that building one directly
    (``CrawlConfig(per_host_concurrency=0)``) names the same keys as loading a recipe does."""

    model_config = ConfigDict(extra="forbid", strict=True)
    KEY: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(error_message(exc, type(self), self.KEY)) from None

    # Marked as pydantic's own __init__, so that validating a recipe builds nested sections in the
    # core (collecting every error) instead of calling this, which stops at the first section.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


def problems(model: Section, found: Iterable[tuple[str, str]]) -> Section:
    """End a model validator: raise the (key relative to the section, message) pairs found, all
    of them, or return the model."""
    found = list(found)
    if found:
        raise PydanticCustomError(
            "config_problems", "{summary}", {"problems": found, "summary": "; ".join(f"{k}: {m}" for k, m in found)}
        )
    return model


# --------------------------------------------------------------------------- building


def build(cls: type[Section], data: dict[str, Any], prefix: str = "") -> Any:
    """Build section ``cls`` from ``data`` (a recipe's mapping), every error in one ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"config key '{prefix or cls.__name__}': expected a mapping of {cls.__name__} fields, got {data!r}"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(error_message(exc, cls, prefix)) from None


def replace(model: Section, **changes: Any) -> Any:
    """``model`` with ``changes``, validated like a recipe (``dataclasses.replace`` for sections)."""
    return type(model)(**{**dict(model), **changes})


def choices(cls: type[BaseModel], name: str) -> list[Any]:
    """The values a ``Literal`` field (or a list of them) allows: for argparse and the form."""
    found = _literals(cls.model_fields[name].annotation)
    if not found:
        raise TypeError(f"{cls.__name__}.{name} is not a choice")
    return found


def _literals(tp: Any) -> list[Any]:
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return [v for arg in typing.get_args(tp) for v in _literals(arg)]


# --------------------------------------------------------------------------- messages


def _key(prefix: str, loc: Iterable[Any]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _strip(tp: Any) -> Any:
    """The model or scalar type under Optional, list[...] and Annotated."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _lookup(root: type[BaseModel], loc: tuple) -> tuple[type[BaseModel] | None, Any]:
    """(the model that holds the last named key of ``loc``, that key's FieldInfo or None)."""
    model: Any = root
    holder, info = root, None
    for part in loc:
        if isinstance(part, int):
            continue
        if not _is_model(model) or part not in model.model_fields:
            return (model if _is_model(model) else None), None
        holder, info = model, model.model_fields[part]
        model = _strip(info.annotation)
    return holder, info


_TYPES = {
    "int_type": "int",
    "float_type": "float",
    "bool_type": "bool",
    "string_type": "str",
    "list_type": "a list",
    "dict_type": "a mapping",
    "int_from_float": "int",
    "none_required": "null",
}


def _bounds(info: Any) -> str | None:
    if info is None:
        return None
    low = high = None
    for m in info.metadata:
        for attr, side, bracket in (("ge", "low", "["), ("gt", "low", "("), ("le", "high", "]"), ("lt", "high", ")")):
            value = getattr(m, attr, None)
            if value is not None:
                if side == "low":
                    low = (bracket, value)
                else:
                    high = (bracket, value)
    if low and high:
        return f"must be in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"must be {'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f"must be {'<=' if high[0] == ']' else '<'} {high[1]}"
    return None


def _hint(info: Any) -> str:
    extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}
    return extra.get("hint", "")


def _one_of(values: list[Any]) -> str:
    shown = [repr(v) if isinstance(v, str) else str(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _message(err: ErrorDetails, root: type[BaseModel], prefix: str) -> list[str]:
    loc, kind, ctx, value = tuple(err["loc"]), err["type"], err.get("ctx") or {}, err.get("input")
    key = _key(prefix, loc)
    if kind == "config_problems":
        return [f"config key '{_key(key, [k] if k else [])}': {m}" for k, m in ctx["problems"]]
    holder, info = _lookup(root, loc)
    if kind == "extra_forbidden":
        names = list(holder.model_fields) if holder is not None else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(names)}"
        return [f"unknown config key '{key}': {hint}"]
    if kind == "missing":
        return [f"config key '{key}': required; give a value"]
    if kind == "literal_error":
        allowed = _literals(info.annotation) if info is not None else []
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        maybe = f"; did you mean '{close[0]}'?" if close and close[0] != str(value) else ""
        hint = f" ({_hint(info)})" if _hint(info) else ""
        return [f"config key '{key}': must be {ctx.get('expected') or _one_of(allowed)}, got {value!r}{maybe}{hint}"]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        hint = _hint(info)
        return [f"config key '{key}': {_bounds(info) or err['msg']}{' ' + hint if hint else ''}, got {value!r}"]
    if kind in ("too_short", "too_long"):
        return [f"config key '{key}': {_hint(info) or err['msg'][0].lower() + err['msg'][1:]}"]
    if kind == "model_type" or kind == "model_attributes_type":
        return [f"config key '{key}': expected a mapping of {ctx.get('class_name', 'section')} fields, got {value!r}"]
    if kind in _TYPES:
        return [f"config key '{key}': expected {_TYPES[kind]}, got {value!r}"]
    if kind == "value_error":
        return [f"config key '{key}': {ctx.get('error', err['msg'])}"]
    return [f"config key '{key}': {err['msg']}"]


def error_message(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """Every error of ``exc`` (validating ``root`` at ``prefix``): one line each, numbered when
    there are several."""
    lines = [line for err in exc.errors(include_url=False) for line in _message(err, root, prefix)]
    lines = list(dict.fromkeys(lines))
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} config errors:\n" + "\n".join(f"  - {line}" for line in lines)
