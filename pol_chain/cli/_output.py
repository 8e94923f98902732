"""Output helpers shared by the commands: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["emit_json", "info", "table", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, bytes and paths into JSON-friendly values (bytes as 0x-hex)."""
    for method in ("to_dict", "to_json"):
        convert = getattr(value, method, None)
        if callable(convert):
            converted = convert()
            if isinstance(converted, dict):
                return to_jsonable(converted)
    if hasattr(value, "__dataclass_fields__"):
        return {k: to_jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "value") and hasattr(value, "name"):  # enums
        return value.name
    return str(value)


def emit_json(value: Any) -> None:
    """Print ``value`` as one JSON document on stdout."""
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """Print a human message on stderr (so stdout stays clean for ``--json``)."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(message)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    view = Table(title=title, title_justify="left")
    for column in columns:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(str(cell) for cell in row))
    Console().print(view)
