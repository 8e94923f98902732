"""Golden files of the format tests: ``pytest tests/format --update-golden`` rewrites them."""

from __future__ import annotations

from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/format/golden/* from the current records",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """``golden(name, data)``: assert ``data`` equals the golden file (or rewrite it)."""
    update = bool(request.config.getoption("--update-golden"))

    def check(name: str, data: bytes) -> None:
        path = GOLDEN / name
        if update or not path.exists():
            path.write_bytes(data)
        assert path.read_bytes() == data, f"{name} changed: a format change needs a version bump"

    return check
