"""Output helpers shared by the commands: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["emit_json", "info", "short", "table", "when"]


def emit_json(value: Any) -> None:
    """Print ``value`` as one JSON document on stdout (dataclasses, bytes as 0x-hex and
    enums by name via :func:`pol_chain.ledger.types.jsonable`; paths as strings)."""
    from pol_chain.ledger.types import jsonable

    text = json.dumps(jsonable(value), indent=2, sort_keys=True, default=str)
    sys.stdout.write(text + "\n")
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


def when(timestamp: int | None) -> str:
    """A UTC time for a block timestamp."""
    from datetime import UTC, datetime

    if not timestamp:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def short(value: str | bytes | None, n: int = 10) -> str:
    """Shorten a hex value for tables."""
    if value is None:
        return "—"
    text = "0x" + value.hex() if isinstance(value, bytes) else str(value)
    return text if len(text) <= n + 2 else text[: n + 2] + "…"
