"""``python -m pol_chain.cli`` runs the ``polchain`` command."""

from pol_chain.cli.main import run

run()
