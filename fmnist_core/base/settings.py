"""Small validation helpers and the text parser shared by every settings dataclass."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any


def knob(default: Any, label: str, *, options=None, help: str | None = None, **metadata: Any):
    """A setting's field with how a form offers it: `label`, and `options` to choose from (a slider
    over them; a toggle for a boolean). The app draws a model's form from these alone."""
    return dataclasses.field(
        default=default, metadata={"label": label, "options": options, "help": help, **metadata}
    )


def shown(value: Any, most: int = 40) -> str:
    """A value as an error message quotes it: its repr, cut to `most` characters (a 5,000-character
    name or a 4,000-digit number from a hostile file made a message of kilobytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and len(str(value)) > 20:
        return f"a {len(str(value))}-digit number"
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}: {shown(value)} is not one of {', '.join(map(str, choices))}")


def check_range(name: str, value: float, low: float, high: float, *, high_open=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {shown(value)}")
    if isinstance(value, int):  # compared as an integer: a 400-digit one overflows a float
        if not low <= value <= high or (high_open and value == high):
            raise ValueError(f"{name}: {shown(value)} is outside [{low}, {high}{')' if high_open else ']'}")
        return
    if not math.isfinite(value):
        raise ValueError(f"{name}: {shown(value)} is not a finite number")
    above = value >= high if high_open else value > high
    if value < low or above:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name}: {shown(value)} is outside [{low}, {high}{bracket}")


MAX_DROPOUT = 0.99  # the engine's dropout draws bytes: p is rounded to 1/256, and must keep some


def check_dropout(name: str, value: float) -> None:
    """A dropout probability in [0, MAX_DROPOUT]."""
    check_range(name, value, 0.0, MAX_DROPOUT)


def check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {shown(value)}")
    check_range(name, value, low, high)


def _parse_scalar(name: str, kind: type, text: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{name}: {shown(text)} is not true or false")
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(f"{name}: {shown(text)} is not a valid {kind.__name__}") from None


def parse_value(name: str, annotation: Any, text: str) -> Any:
    """Turn the text of `--set name=text` into a value of the field's annotated type."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        parts = [part for part in text.split(",") if part.strip()]
        return tuple(_parse_scalar(name, item_type, part) for part in parts)
    return _parse_scalar(name, annotation, text)


def field_types(settings_type: type) -> dict[str, Any]:
    return dict(_field_types(settings_type))


@functools.cache
def _field_types(settings_type: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(settings_type)  # slow: it evaluates every annotation
    return tuple((field.name, hints[field.name]) for field in dataclasses.fields(settings_type))


def coerce(settings_type: type, values: dict[str, Any]) -> dict[str, Any]:
    """Names checked against the dataclass; strings parsed, lists made tuples (JSON round-trip)."""
    types = field_types(settings_type)
    out = {}
    for name, value in values.items():
        if name not in types:
            raise ValueError(f"{name}: unknown setting; allowed: {', '.join(sorted(types))}")
        annotation = types[name]
        if isinstance(value, str) and annotation is not str:
            value = parse_value(name, annotation, value)
        elif isinstance(value, list):
            value = tuple(value)
        elif annotation is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # a 400-digit integer
                raise ValueError(f"{name}: {shown(value)} is not a finite number") from None
        out[name] = value
    return out
