"""Helpers for values that arrive through bundle configs and command-line overrides."""

from __future__ import annotations

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def flag(value: object, name: str) -> bool:
    """A boolean setting: ``True``/``False`` or their usual spellings (``--isample#enabled false`` arrives from the
    command line as the string ``'false'``, which Python would take as true)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"config value {name} must be true or false, got {value!r}")
