"""Type checks of the JSON the harness reads back (result records, checkpoint sidecars): a field of
another type than its readers use stops the report or the grid that reads it with a TypeError,
so a file that has one is refused, with the field named, as a file of bad JSON is."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

# (field names, the check their values pass, what the check asks for, as the message says it)
FieldTypes = Sequence[Tuple[Sequence[str], Callable[[object], bool], str]]


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_text(v) -> bool:
    return isinstance(v, str)


def is_whole_or_null(v) -> bool:
    return v is None or isinstance(v, int) and not isinstance(v, bool)


def field_problem(obj: dict, types: FieldTypes) -> Optional[str]:
    """The first of ``obj``'s fields that fails its check in ``types``, as "k is v, not what"; None
    when they all pass (a field left out passes: its readers take the default)."""
    for keys, ok, what in types:
        for k in keys:
            if k in obj and not ok(obj[k]):
                return f"{k} is {obj[k]!r}, not {what}"
    return None
