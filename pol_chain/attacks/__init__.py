"""Adversaries against proof-of-learning, for research and the attack tests (docs/protocol.md §6).

Every adversary writes a complete pol_chain proof directory bound to a run id / run seed
of its own (so it can be committed through the real ledger client and verified by the
real verifier), and reports what the forgery cost (:class:`AttackCost`).

The two entry points the CLI uses:

- :func:`forge_interpolated_proof` — ``polchain attack forge``: a blindfold/interpolation
  proof of stolen weights, bound to the caller's run id and run seed.
- :func:`rebind_proof` — ``polchain attack copy``: copy someone's proof directory and
  re-bind it (manifest run id and every leaf) to a new run id.

Modules: :mod:`interpolation` (blindfold top-Q, rank-matched init), :mod:`adversarial_data`,
:mod:`infinitesimal`, :mod:`momentum`, :mod:`tamper`, :mod:`payload`, :mod:`copying`
(whole and live copies), :mod:`onchain` (drive any of them through the ledger client), and
:mod:`reference`: a verifier configured like the reference implementation, the baseline
these attacks beat.
"""

from pol_chain.attacks._proof import AttackCost, ForgedProof
from pol_chain.attacks.adversarial_data import (
    CLAIMED_DATASET,
    forge_adversarial_data_proof,
    load_claimed_dataset,
)
from pol_chain.attacks.copying import LiveCopier, rebind_proof
from pol_chain.attacks.infinitesimal import (
    forge_infinitesimal_proof,
    infinitesimal_proof_spec,
    infinitesimal_spec,
)
from pol_chain.attacks.interpolation import forge_interpolated_proof, rank_matched_init
from pol_chain.attacks.momentum import forge_momentum_steering_proof
from pol_chain.attacks.payload import PickleBomb, plant_pickle_payload
from pol_chain.attacks.reference import (
    ReferenceConfig,
    ReferenceReport,
    ks_2samp,
    ks_init_test,
    reference_verify,
)
from pol_chain.attacks.tamper import recommit_manifest, tamper_checkpoint, tamper_data_order

__all__ = [
    "CLAIMED_DATASET",
    "AttackCost",
    "ForgedProof",
    "LiveCopier",
    "PickleBomb",
    "ReferenceConfig",
    "ReferenceReport",
    "forge_adversarial_data_proof",
    "forge_infinitesimal_proof",
    "forge_interpolated_proof",
    "forge_momentum_steering_proof",
    "infinitesimal_proof_spec",
    "infinitesimal_spec",
    "ks_2samp",
    "ks_init_test",
    "load_claimed_dataset",
    "plant_pickle_payload",
    "rank_matched_init",
    "rebind_proof",
    "recommit_manifest",
    "reference_verify",
    "tamper_checkpoint",
    "tamper_data_order",
]
