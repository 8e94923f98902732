"""Adversaries against proof-of-learning, for research and the attack tests (PROTOCOL §6).

Every adversary writes a complete pol_chain proof directory bound to a run id / run seed
of its own (so it can be committed through the real ledger client and verified by the
real verifier), and reports what the forgery cost (:class:`AttackCost`).

The two entry points the CLI uses:

- :func:`forge_interpolated_proof` — ``polchain attack forge``: a blindfold/interpolation
  proof of stolen weights, bound to the caller's run id and run seed.
- :func:`rebind_proof` — ``polchain attack copy``: copy someone's proof directory and
  re-bind it (manifest run id and every leaf) to a new run id.

:mod:`pol_chain.attacks.reference` is a verifier configured like the reference
implementation, the baseline these attacks beat.
"""

from pol_chain.attacks._proof import AttackCost, ForgedProof
from pol_chain.attacks.interpolation import forge_interpolated_proof, rank_matched_init

__all__ = [
    "AttackCost",
    "ForgedProof",
    "forge_interpolated_proof",
    "rank_matched_init",
]
