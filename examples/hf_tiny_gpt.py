#!/usr/bin/env python3
"""Record a proof from a Hugging Face ``transformers.Trainer`` run: a small causal
language model built from a config (random init, nothing downloaded).

    cd examples
    polchain register hf_tiny_gpt:build --out proof
    python hf_tiny_gpt.py proof           # while `polchain commit proof --follow` runs
    polchain finalize proof

The file is the task (``build``: model, data, the run's total steps and the
``TrainingArguments`` its replay depends on) and the training script (``main``). The
text is Python's own ``json/decoder.py`` source, which ships with every Python: byte
level tokens, blocks of ``block`` tokens. AdamW with warm-up and linear decay, the
default ``max_grad_norm=1.0`` clipping, 2-way gradient accumulation, dict batches and
GPT-2's dropout: the verifier replays them through the same ``Trainer``.
``--stop-after N`` stops early and finalizes there. A run that was killed resumes from
its last checkpoint when the same command is run again (``Recorder(..., resume=True)``).
"""

from __future__ import annotations

import argparse
import importlib.resources
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from pol_chain.errors import PolchainError
from pol_chain.format import RunBinding, TaskSpec
from pol_chain.integrations.hf import hf_task, polchain_trainer
from pol_chain.proof import Recorder, build_bundle
from pol_chain.proof.engine import TrainState
from pol_chain.proof.task import TaskBundle

DEFAULT_CONFIG: dict[str, Any] = {
    "batch_size": 16,
    "epochs": 1,
    "k": 5,
    "grad_accumulation": 2,
    "block": 32,
    "layers": 2,
    "width": 64,
    "heads": 2,
    "lr": 0.001,
    "warmup_steps": 3,
}


class TextBlocks(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Consecutive blocks of byte tokens; each sample is ``{"input_ids", "labels"}``."""

    def __init__(self, text: bytes, block: int) -> None:
        tokens = torch.tensor(list(text), dtype=torch.int64).clamp_(max=127)
        n = len(tokens) // block
        self.blocks = tokens[: n * block].view(n, block)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.blocks[index]
        return {"input_ids": ids, "labels": ids}


def corpus() -> bytes:
    """The training text: ``json/decoder.py`` as installed with Python."""
    return importlib.resources.files("json").joinpath("decoder.py").read_bytes()


def build(config: Mapping[str, Any], device: torch.device) -> TaskBundle:
    """The task: a GPT-2 of ``layers`` × ``width`` on byte tokens, and its Trainer settings."""
    cfg = {**DEFAULT_CONFIG, **dict(config)}
    data = TextBlocks(corpus(), int(cfg["block"]))
    model: torch.nn.Module = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=128,
            n_positions=int(cfg["block"]),
            n_embd=int(cfg["width"]),
            n_layer=int(cfg["layers"]),
            n_head=int(cfg["heads"]),
            bos_token_id=None,
            eos_token_id=None,
        )
    )
    model.to(device)
    total = int(cfg["epochs"]) * (len(data) // int(cfg["batch_size"]))
    accumulation = int(cfg["grad_accumulation"])
    return hf_task(
        model,
        data,
        total_steps=total,
        learning_rate=float(cfg["lr"]),
        warmup_steps=int(cfg["warmup_steps"]),
        lr_scheduler_type="linear",
        weight_decay=0.01,
        gradient_accumulation_steps=accumulation,
        per_device_train_batch_size=int(cfg["batch_size"]) // accumulation,
    )


def main(proof: Path, workers: int = 0, stop_after: int | None = None) -> int:
    """Train the registered run of ``proof`` with the HF Trainer, recording it."""
    binding = RunBinding.read(proof)
    spec = TaskSpec.from_bytes((proof / "spec.json").read_bytes())
    bundle = build_bundle(spec, binding.run_seed)  # W0 from the run seed
    # resume=True: after a crash, the same command continues from the last checkpoint
    state = TrainState.of(bundle)
    rec = Recorder(proof, spec, binding.run_id_bytes, binding.run_seed, state=state, resume=True)
    steps = spec.total_steps if stop_after is None else min(spec.total_steps, stop_after)
    if rec.step > steps:  # a resumed proof already past the stop asked for
        rec.close(final=False)
        raise PolchainError(
            f"the proof is at step {rec.step} already, past --stop-after {steps}",
            hint=f"--stop-after {rec.step} finalizes it there",
        )
    if rec.step < steps:  # max_steps counts from the step it resumed at
        out = str(proof / "hf-out")
        trainer = polchain_trainer(
            bundle, rec, out, max_steps=steps - rec.step, dataloader_num_workers=workers
        )
        trainer.train()
    rec.close(final=True)  # a run may finalize before its planned last step
    print(f"recorded {rec.step} steps into {proof}")
    return rec.step


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("proof", type=Path, nargs="?", default=Path("proof"))
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--stop-after", type=int, default=None, help="stop early after N steps")
    args = parser.parse_args()
    try:
        main(args.proof, args.workers, args.stop_after)
    except PolchainError as exc:  # one line and a hint, as the CLI prints them
        raise SystemExit(f"error: {exc}" + (f"\nhint: {exc.hint}" if exc.hint else "")) from None
