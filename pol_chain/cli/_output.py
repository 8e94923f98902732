"""Output helpers shared by the commands: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["emit_json", "info", "table"]


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
