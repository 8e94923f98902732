"""``polchain attack forge|copy``: adversaries for research and the demo story.

Each registers a run for the attacker's account, writes a forged proof directory bound
to it, and leaves committing and finalizing to the ordinary ``polchain commit`` and
``finalize`` — exactly what a thief would do.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pol_chain.cli._context import AccountOpt, JsonOpt, current_settings
from pol_chain.cli._output import emit_json, info
from pol_chain.errors import PolchainError
from pol_chain.format import RunBinding

if TYPE_CHECKING:
    from pol_chain.attacks import ForgedProof

app = typer.Typer()
attack_app = typer.Typer(
    help=(
        "Adversaries against proof-of-learning, for research and demos. "
        "Example: polchain attack forge model.safetensors --account 2"
    ),
    no_args_is_help=True,
)
app.add_typer(attack_app, name="attack")


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


@attack_app.command("forge")
def forge(
    model: Annotated[Path, typer.Argument(help="Stolen model weights (safetensors).")],
    out: Annotated[Path, typer.Option(help="Where to write the forged proof.")] = Path("forged"),
    task: Annotated[str, typer.Option(help="Task the model belongs to.")] = "digits",
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a run and forge a proof that interpolates to stolen weights.

    Example: polchain attack forge runs/digits/model.safetensors --account 2
    """
    from pol_chain.attacks import forge_interpolated_proof
    from pol_chain.compose.registration import build_spec, register_spec

    if not model.is_file():
        raise PolchainError(f"{model}: no such model file")
    spec = build_spec(task)
    binding, _, _, spec = register_spec(current_settings(), spec, out, account)
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


@attack_app.command("copy")
def copy(
    proof_dir: Annotated[Path, typer.Argument(help="Someone else's proof directory.")],
    out: Annotated[Path, typer.Option(help="Where to write the copied proof.")] = Path("copied"),
    account: AccountOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a run and re-bind someone's public proof to it (proof copying, 6.8).

    Example: polchain attack copy runs/digits --account 2
    """
    from pol_chain.attacks import rebind_proof
    from pol_chain.compose.registration import register_spec
    from pol_chain.format import BUNDLE_FILE, TaskSpec

    spec_file = proof_dir / "spec.json"
    if not spec_file.is_file():
        raise PolchainError(f"{proof_dir} is not a proof directory (no spec.json)")
    spec = TaskSpec.from_bytes(spec_file.read_bytes())
    code = (proof_dir / BUNDLE_FILE).read_bytes() if (proof_dir / BUNDLE_FILE).is_file() else None
    binding, _, _, spec = register_spec(current_settings(), spec, out, account, code=code)
    forged = rebind_proof(proof_dir, out, binding.run_id_bytes)
    (out / "published.json").unlink(missing_ok=True)  # the victim's CID cache
    shutil.rmtree(out / "verification", ignore_errors=True)  # the victim's local report
    binding.write(out)
    result = _summary(binding, forged, "copy")
    if json_out:
        emit_json(result)
    else:
        info(f"copied {proof_dir} as run {binding.run_id} into {out}")
