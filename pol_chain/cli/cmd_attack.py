"""``polchain attack forge|copy``: adversaries for research and the demo story.

Each registers a run for the attacker's account, writes a forged proof directory bound
to it, and leaves committing and finalizing to the ordinary ``polchain commit`` and
``finalize`` — exactly what a thief would do.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pol_chain.cli._output import emit_json, info
from pol_chain.compose.binding import RunBinding
from pol_chain.config import Settings
from pol_chain.errors import PolchainError

if TYPE_CHECKING:
    from pol_chain.attacks import ForgedProof


def _summary(binding: RunBinding, forged: ForgedProof, kind: str) -> dict[str, Any]:
    return {
        "attack": kind,
        "run_id": binding.run_id,
        "trainer": binding.trainer,
        "proof_dir": str(forged.proof_dir),
        "model_digest": "0x" + forged.model_digest.hex() if forged.model_digest else None,
        "checkpoints": len(forged.leaves),
        "cost": {
            "gradient_steps": forged.cost.gradient_steps,
            "seconds": round(forged.cost.seconds, 3),
        },
    }


def forge(
    settings: Settings, *, model: Path, out: Path, task: str, account: int | None, json_out: bool
) -> None:
    """Register a run and forge an interpolated proof ending at ``model``."""
    from pol_chain.attacks import forge_interpolated_proof
    from pol_chain.cli.cmd_train import build_spec, register_spec

    if not model.is_file():
        raise PolchainError(f"{model}: no such model file")
    spec = build_spec(task, None, None)
    binding, _, _ = register_spec(settings, spec, out, account)
    forged = forge_interpolated_proof(model, out, spec, binding.run_id_bytes, binding.run_seed)
    binding.write(out)  # the forger rewrites the directory
    result = _summary(binding, forged, "forge")
    if json_out:
        emit_json(result)
    else:
        info(
            f"forged {len(forged.leaves)} checkpoints for run {binding.run_id} in {out} "
            f"({forged.cost.gradient_steps} gradient steps)"
        )


def copy(
    settings: Settings, *, proof_dir: Path, out: Path, account: int | None, json_out: bool
) -> None:
    """Register a run with the victim's spec and re-bind the victim's proof to it."""
    from pol_chain.attacks import rebind_proof
    from pol_chain.cli.cmd_train import register_spec
    from pol_chain.proof import TaskSpec

    spec_file = proof_dir / "spec.json"
    if not spec_file.is_file():
        raise PolchainError(f"{proof_dir} is not a proof directory (no spec.json)")
    spec = TaskSpec.from_bytes(spec_file.read_bytes())
    binding, _, _ = register_spec(settings, spec, out, account)
    forged = rebind_proof(proof_dir, out, binding.run_id_bytes)
    (out / "published.json").unlink(missing_ok=True)  # the victim's CID cache
    shutil.rmtree(out / "verification", ignore_errors=True)  # the victim's local report
    binding.write(out)
    result = _summary(binding, forged, "copy")
    if json_out:
        emit_json(result)
    else:
        info(f"copied {proof_dir} as run {binding.run_id} into {out}")
