"""Engine defects the attack work exposed, kept as regression tests (both are fixed).

Finding 1 — ``restore_state`` lets the optimizer adopt the checkpoint's tensors:
``optimizer.load_state_dict`` keeps same-device/same-dtype tensors as they are, and SGD
then updates its momentum buffers *in place*. In the verifier's ``_replay`` the start
checkpoint's dict (``start[0]``) is therefore mutated by the replay before
``compare_states(replayed, end[0], start[0])`` runs, so ``previous`` carries the
*replayed end* momentum instead of W_i's: the reported ``update_norm``, the normalized
error's denominator and the direction cosine all ignore the momentum part of the update.
On bitwise-identical hardware the verdict is unaffected (l2 = 0), but across hardware the
metrics are wrong (a momentum error is divided by a parameters-only update), and so is
the report whose digest goes on chain. Fixed in c25a3bd: ``restore_state`` copies the
optimizer state.
"""

from __future__ import annotations

import pytest
import torch

from pol_chain.attacks._proof import load_checkpoint
from pol_chain.proof.engine import restore_state, run_step
from pol_chain.proof.loop import build_bundle
from pol_chain.proof.policy import Policy
from pol_chain.proof.verifier import verify_dir

from .conftest import World


def test_restore_state_leaves_the_checkpoint_untouched(world: World) -> None:
    state, meta = load_checkpoint(world.honest_dir, 8)
    before = {k: v.clone() for k, v in state.items()}
    bundle = build_bundle(world.spec, world.honest_seed)
    restore_state(bundle.model, bundle.optimizer, bundle.scheduler, state, meta, "ckpt 8")
    run_step(bundle, torch.arange(32), {"augment": 1, "dropout": 2})
    changed = [k for k in state if not torch.equal(state[k], before[k])]
    assert changed == []


def test_reported_update_norm_is_the_full_state_update(world: World) -> None:
    prev, _ = load_checkpoint(world.honest_dir, 8)
    cur, _ = load_checkpoint(world.honest_dir, 9)
    keys = sorted(k for k, v in cur.items() if v.is_floating_point())
    true_norm = float(
        torch.cat([(cur[k].double() - prev[k].double()).reshape(-1) for k in keys]).norm()
    )
    report = verify_dir(  # replays the first and the last segment only
        world.honest_dir,
        run_id=world.honest_run,
        run_seed=world.honest_seed,
        challenge_seed=b"\x01" * 32,
        policy=Policy(full_below=0, m=0, q=0),
        threads=2,
    )
    seg = report.segment(9)
    assert seg is not None and seg.metrics is not None
    assert seg.metrics.update_norm == pytest.approx(true_norm, rel=1e-6)
