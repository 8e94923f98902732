"""Record a run from an unmodified ``LightningModule`` and ``Trainer``, replay it with
the module's own ``training_step`` (extra ``lightning``).

The task function returns :func:`lightning_task` (the module, its data and the trainer
settings replay depends on). Training::

    bundle = build_bundle(spec, run_seed)            # W0 from the run seed
    rec = Recorder(proof, spec, run_id, run_seed, state=TrainState.of(bundle))
    trainer = lightning.Trainer(**trainer_settings(bundle), max_steps=spec.total_steps,
                                callbacks=[PolchainCallback(rec)], ...)
    trainer.fit(bundle.model, train_dataloaders=train_loader(bundle, rec))
    rec.close(final=True)

The callback seeds torch's RNG with the step's dropout seed before its first
micro-batch, records each optimizer step where the next one begins (the loader is the
run's, so a step's micro-batches and seeds are the run's own: the recorder expands them
at each checkpoint) and hands the trainer's optimizers, step-interval schedulers and
gradient scaler to the recorder, so every checkpoint holds the full state. The verifier's replay (:func:`replay_segments`)
builds one ``Trainer`` from the same settings for all of a challenge's segments and runs
their recorded micro-batches through ``trainer.fit``, restoring each segment's start
state before its first step: automatic optimization, gradient
clipping, gradient accumulation and ``precision="bf16-mixed"`` replay bitwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pol_chain.integrations._common import (
    IntegrationError,
    SegmentPlan,
    check_settings,
    import_extra,
    replay_loader,
    segment_batches,
)
from pol_chain.proof.engine import ReplayJob, TrainState
from pol_chain.proof.recorder import Recorder
from pol_chain.proof.seeds import seed_global_rng
from pol_chain.proof.task import TaskBundle, TrainerPlan

__all__ = [
    "PolchainCallback",
    "lightning_task",
    "replay_segments",
    "train_loader",
    "trainer_settings",
]

_KEY = "lightning"


def _pl() -> Any:
    return import_extra("lightning.pytorch", "lightning")


def lightning_task(
    module: Any,
    dataset: Any,
    *,
    accumulate_grad_batches: int = 1,
    gradient_clip_val: float | None = None,
    gradient_clip_algorithm: str = "norm",
    precision: str = "32-true",
    collate: Any = None,
) -> TaskBundle:
    """The task bundle of a ``LightningModule`` trained on ``dataset`` (map-style) with
    these trainer settings; its replay is :func:`replay_segments`."""
    _pl()
    settings = {
        "accumulate_grad_batches": int(accumulate_grad_batches),
        "gradient_clip_val": gradient_clip_val,
        "gradient_clip_algorithm": gradient_clip_algorithm,
        "precision": precision,
    }
    return TaskBundle(
        model=module,
        dataset=dataset,
        collate=collate,
        replayer=replay_segments,
        framework={_KEY: settings},
        plan=TrainerPlan(micro_batches=int(accumulate_grad_batches)),
    )


def trainer_settings(bundle: TaskBundle) -> dict[str, Any]:
    """The ``Trainer`` keyword arguments the task fixes (pass them to your ``Trainer``)."""
    settings = bundle.framework.get(_KEY)
    if settings is None:
        raise IntegrationError("this task was not built with lightning_task()")
    return dict(settings)


def train_loader(bundle: TaskBundle, recorder: Recorder, **loader: Any) -> Any:
    """A ``DataLoader`` over the task's data in the run's order (``num_workers`` and the
    other ``DataLoader`` options are yours; the batch sampler and collate are the run's)."""
    return torch.utils.data.DataLoader(
        bundle.data,
        batch_sampler=recorder.batch_sampler(),
        collate_fn=bundle.collate_fn,
        **loader,
    )


def _trainer_state(trainer: Any, module: Any) -> TrainState:
    schedulers = []
    for config in trainer.lr_scheduler_configs:
        if config.interval != "step" or config.frequency != 1:
            raise IntegrationError(
                "a recorded run's LR schedulers must step every optimizer step",
                hint="return {'scheduler': s, 'interval': 'step'} from configure_optimizers",
            )
        schedulers.append(config.scheduler)
    if str(trainer.precision).startswith("16"):
        raise IntegrationError("fp16 with a gradient scaler is not recorded: use bf16-mixed")
    if not module.automatic_optimization:
        raise IntegrationError("manual optimization is not supported: use automatic")
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return TrainState(module, list(trainer.optimizers), schedulers, scaler)


def _actual(trainer: Any) -> dict[str, Any]:
    return {
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": str(getattr(trainer.gradient_clip_algorithm, "value", "norm")),
        "precision": str(trainer.precision),
    }


_UNUSED_STEP_HOOKS = (
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
)


def _skip_unused_step_hooks(callback: Any) -> None:
    """Lightning calls every hook of every callback (a profiler context each, 1.5-3 µs)
    but skips an attribute that is not callable (``trainer/call.py``,
    ``_call_callback_hooks``). The callbacks use one hook a micro-batch,
    ``on_train_batch_start``: a step ends where the next begins (or at
    ``on_train_end``), the model, optimizers and schedulers as they were after the
    previous ``on_train_batch_end`` (Lightning steps step-interval schedulers before
    it). That leaves 2 of 12 dispatches a step with 2 micro-batches."""
    for hook in _UNUSED_STEP_HOOKS:
        setattr(callback, hook, None)


def _make_callback_classes() -> tuple[type, type]:
    base = _pl().Callback

    class Recording(base):  # type: ignore[misc, valid-type]
        def __init__(self, recorder: Recorder, settings: Mapping[str, Any] | None) -> None:
            super().__init__()
            self.recorder = recorder
            self.settings = settings
            self.accumulation = recorder.spec.accumulation
            self._in_step = False  # a step has begun and is not recorded yet
            self._first_step = 0  # the recorder's step when fit started (its global_step 0)
            self._buffers: list[torch.Tensor] = []  # the module's, with accumulation
            self._at_step_start: list[torch.Tensor] = []
            _skip_unused_step_hooks(self)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if self.settings is not None:
                check_settings("Lightning", self.settings, _actual(trainer))
            if trainer.accumulate_grad_batches != self.accumulation:
                raise IntegrationError(
                    f"accumulate_grad_batches={trainer.accumulate_grad_batches}, the run's "
                    f"spec says {self.accumulation} micro-batches per step"
                )
            batches = trainer.num_training_batches
            if batches != float("inf") and batches % self.accumulation:
                # Lightning steps the optimizers on the epoch's last, partial accumulation:
                # a step of fewer micro-batches than the run's, which replay refutes
                raise IntegrationError(
                    f"the epoch has {batches} micro-batches, not a multiple of the run's "
                    f"{self.accumulation} a step (limit_train_batches?)",
                    hint=f"use a multiple of {self.accumulation} (or max_steps to stop early)",
                )
            state = _trainer_state(trainer, pl_module)
            rec = self.recorder
            if rec.step != 0 and not rec.resuming:
                raise IntegrationError(
                    f"this recorder is at step {rec.step}: a new fit() builds the optimizers "
                    "and schedulers afresh, so its steps would not be the run's",
                    hint="record a run with one fit() a process; after a crash, reopen the "
                    "proof with Recorder(..., resume=True) and fit again",
                )
            if trainer.global_step != 0:
                raise IntegrationError(
                    f"the Trainer starts at its step {trainer.global_step} (fit(ckpt_path=...)?): "
                    "its own checkpoint is not the run's state",
                    hint="resume with Recorder(..., resume=True) and no ckpt_path",
                )
            left = rec.spec.total_steps - rec.step
            if trainer.max_epochs != 1 and not 0 <= trainer.max_steps <= left:
                # a second epoch would iterate the run's batch sampler again, from its start
                raise IntegrationError(
                    f"max_epochs={trainer.max_epochs} with max_steps={trainer.max_steps}: "
                    f"the run has {left} steps left, in one pass of its batch sampler",
                    hint="pass max_epochs=1 (the run's sampler spans all of its epochs)",
                )
            loader = trainer.train_dataloader
            if not rec.is_run_order(getattr(loader, "batch_sampler", None)):
                # replay trains on the recorded (the run's) order: any other is refuted
                raise IntegrationError(
                    "the training DataLoader does not draw the run's batches (its own "
                    "shuffle or sampler, a DataModule's loader?): the proof records the "
                    "run's order, so its verifier would refute every segment",
                    hint="pass train_loader(bundle, recorder) to fit(), made after the "
                    "Recorder (num_workers and other loader options are yours)",
                )
            rec.attach(state.optimizers, state.schedulers, state.scaler)  # a resume restores
            self._first_step = rec.step
            if self.accumulation > 1:  # a stop between micro-batches must undo a forward
                self._buffers = list(pl_module.buffers())
                self._at_step_start = [b.detach().clone() for b in self._buffers]

        def on_train_batch_start(
            self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
        ) -> None:
            if batch_idx % self.accumulation:
                return
            rec = self.recorder
            if self._in_step:
                rec.on_step_end()  # the run's own micro-batches and seeds
            if self._buffers:
                torch._foreach_copy_(self._at_step_start, self._buffers)
            seed_global_rng(rec.step_seed("dropout"))  # as run_step seeds before a step
            self._in_step = True

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._finish(trainer, pl_module)

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            # fit ended on an error (a failing batch or collate, Ctrl-C) with no
            # on_train_end: record the step that finished, so the state a caller closes
            # on is the state the proof says
            self._finish(trainer, pl_module)

        def _finish(self, trainer: Any, pl_module: Any) -> None:
            rec = self.recorder
            if self._in_step:
                if trainer.global_step > rec.step - self._first_step:
                    rec.on_step_end()
                else:  # stopped between micro-batches: no optimizer step, but a forward
                    self._undo_partial_step(pl_module)
            self._in_step = False

        def _undo_partial_step(self, pl_module: Any) -> None:
            """Put back the buffers (BatchNorm statistics) the stopped step's forward
            passes changed, so the last checkpoint is the state after the last step."""
            now = list(pl_module.buffers())
            if len(now) != len(self._buffers) or any(
                a is not b for a, b in zip(now, self._buffers, strict=False)
            ):
                raise IntegrationError(
                    "training stopped between micro-batches and the module replaced a "
                    "buffer, so the state after the last step is lost",
                    hint="reopen the proof with Recorder(..., resume=True) and close(final=True) "
                    "to finalize on its last checkpoint, or stop on a step boundary",
                )
            if self._buffers:
                torch._foreach_copy_(self._buffers, self._at_step_start)

    class Replaying(base):  # type: ignore[misc, valid-type]
        """Replays several segments in one ``fit``: each from its own start checkpoint,
        restored before its first micro-batch, its end state captured after its last
        optimizer step (where the recorder captures a checkpoint)."""

        def __init__(self, jobs: Sequence[ReplayJob], accumulation: int) -> None:
            super().__init__()
            self.accumulation = accumulation
            self.plan = SegmentPlan(jobs)
            self._state: TrainState | None = None
            self._ended = -1  # the last step whose end has passed
            _skip_unused_step_hooks(self)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self._state = _trainer_state(trainer, pl_module)

        def on_train_batch_start(
            self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
        ) -> None:
            if batch_idx % self.accumulation:
                return
            assert self._state is not None
            step = batch_idx // self.accumulation
            self._end(step - 1)
            self.plan.begin(step, self._state)
            seed_global_rng(int(self.plan.step(step).seeds["dropout"]))

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._end(trainer.global_step - 1)  # steps the optimizers took

        def _end(self, step: int) -> None:
            if step > self._ended:
                assert self._state is not None
                self.plan.end(step, self._state)
                self._ended = step

    return Recording, Replaying


_CLASSES: tuple[type, type] | None = None


def _classes() -> tuple[type, type]:
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _make_callback_classes()
    return _CLASSES


def PolchainCallback(recorder: Recorder, bundle: TaskBundle | None = None) -> Any:  # noqa: N802
    """A ``lightning.pytorch.Callback`` that records the run into ``recorder``. With the
    ``bundle`` from :func:`lightning_task`, it also refuses a ``Trainer`` whose
    replay-relevant settings differ from the task's."""
    return _classes()[0](recorder, None if bundle is None else trainer_settings(bundle))


def _quiet_trainer(**kwargs: Any) -> Any:
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _pl().Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            max_epochs=1,
            **kwargs,
        )


def replay_segments(bundle: TaskBundle, jobs: Sequence[ReplayJob]) -> list[dict[str, torch.Tensor]]:
    """Replay every job's steps from its own checkpoint through one ``Trainer`` with the
    task's settings; return the states after them (the verifier's ``replayer``)."""
    import warnings

    settings = trainer_settings(bundle)
    accumulation = settings["accumulate_grad_batches"]
    batches = [mb for job in jobs for mb in segment_batches(job.steps, accumulation)]
    if not batches:
        return [dict(job.start) for job in jobs]
    callback = _classes()[1](jobs, accumulation)
    trainer = _quiet_trainer(max_steps=callback.plan.total, callbacks=[callback], **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(bundle.model, train_dataloaders=replay_loader(bundle, batches))
    return callback.plan.results()  # refuses a run that stopped before a segment's end
