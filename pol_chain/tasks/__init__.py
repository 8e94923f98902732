"""Training tasks that ship with pol_chain: ``digits`` (real data, CPU) and ``resnet20``."""

__all__ = ["DIGITS", "RESNET20"]

DIGITS = "pol_chain.tasks.digits:build"
RESNET20 = "pol_chain.tasks.resnet20:build"
