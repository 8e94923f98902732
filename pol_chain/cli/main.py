"""Entry point of the ``polchain`` command (placeholder until the CLI lands)."""

import sys


def run() -> None:
    """Run the ``polchain`` command."""
    print("polchain: CLI not built yet", file=sys.stderr)
    sys.exit(1)
