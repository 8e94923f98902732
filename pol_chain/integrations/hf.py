"""Record a Hugging Face ``transformers.Trainer`` run and replay it with the same
``Trainer`` (extra ``hf``).

The task function returns :func:`hf_task` (the model, its data, the run's total steps
and the ``TrainingArguments`` its replay depends on). Training::

    bundle = build_bundle(spec, run_seed)            # W0 from the run seed
    rec = Recorder(proof, spec, run_id, run_seed, state=TrainState.of(bundle))
    trainer = polchain_trainer(bundle, rec, output_dir="out")   # or PolchainTrainer(...)
    trainer.train()
    rec.close(final=True)

:class:`PolchainTrainer` is ``Trainer`` with two small hooks: its training
``DataLoader`` takes the run's ``batch_sampler`` (the data order comes from the run
seed), and its LR schedule spans the run's total steps whatever ``max_steps`` is (so a
replay of one segment schedules as the run did). :func:`PolchainTrainerCallback` seeds
torch's RNG with each step's dropout seed before its first micro-batch, records each
optimizer step and hands the optimizer and scheduler to the recorder. Default
``max_grad_norm`` clipping, gradient accumulation (with the loss normalized over the
tokens of the whole step) and dict batches replay bitwise.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import torch

from pol_chain.integrations._common import (
    IntegrationError,
    SegmentPlan,
    check_settings,
    import_extra,
    segment_batches,
)
from pol_chain.proof.engine import ReplayJob, TrainState
from pol_chain.proof.recorder import Recorder
from pol_chain.proof.seeds import seed_global_rng
from pol_chain.proof.task import TaskBundle, TrainerPlan

__all__ = [  # and PolchainTrainer, built when first used (module __getattr__)
    "PolchainTrainerCallback",
    "hf_task",
    "polchain_trainer",
    "replay_segments",
    "training_arguments",
]

_KEY = "hf"
_QUIET: dict[str, Any] = {
    "report_to": [],
    "save_strategy": "no",
    "logging_strategy": "no",
    "eval_strategy": "no",
    "disable_tqdm": True,
    "use_cpu": True,
    "remove_unused_columns": False,
}


# TrainingArguments that do not touch a training step (where the run writes, logs and
# evaluates; how many steps it takes; loader workers): a trainer may set them as it
# likes. Every other argument is the task's, because replay builds its Trainer from the
# task's arguments alone.
_FREE_ARGUMENTS = frozenset(
    {
        "output_dir",
        "max_steps",
        "num_train_epochs",  # max_steps decides
        "seed",  # the step's RNG is seeded from the run seed before each step
        "data_seed",  # the data order is the run's batch sampler
        "dataloader_num_workers",
        "dataloader_persistent_workers",
        "dataloader_pin_memory",
        "dataloader_prefetch_factor",
        "dataloader_multiprocessing_context",
        # the training DataLoader is PolchainTrainer's own: these do not reach it
        "dataloader_drop_last",
        "dataloader_in_order",
        "remove_unused_columns",
        "length_column_name",
        "train_sampling_strategy",
        "ignore_data_skip",
        "resume_from_checkpoint",  # train() at a step other than 0 is refused
        "restore_callback_states_from_checkpoint",
        "use_cpu",  # the device is the verifier's to weigh (docs/protocol.md)
        "torch_empty_cache_steps",
        "include_num_input_tokens_seen",
        "disable_tqdm",
        "report_to",
        "run_name",
        "project",
        "push_to_hub",
        "skip_memory_metrics",
        "do_train",
        "do_eval",
        "do_predict",
        "per_device_eval_batch_size",
        "prediction_loss_only",
        "include_for_metrics",
        "batch_eval_metrics",
        "metric_for_best_model",
        "greater_is_better",
    }
)
_FREE_PREFIXES = ("logging_", "log_", "save_", "eval_", "hub_", "trackio_")


_BEST_MODEL = (
    "load_best_model_at_end would end the run on an earlier checkpoint's weights, and the "
    "proof claims the model of its last step"
)
_BEST_MODEL_HINT = (
    "drop it: EarlyStoppingCallback without it stops the run where the metric stalled, "
    "and the proof finalizes there"
)


def _is_free(argument: str) -> bool:
    return argument in _FREE_ARGUMENTS or argument.startswith(_FREE_PREFIXES)


def _transformers() -> Any:
    import_extra("accelerate", "hf")
    return import_extra("transformers", "hf")


def hf_task(
    model: Any,
    dataset: Any,
    *,
    total_steps: int,
    collate: Any = None,
    **arguments: Any,
) -> TaskBundle:
    """The task bundle of a ``transformers`` model trained by a ``Trainer`` with these
    ``TrainingArguments`` (``learning_rate``, ``gradient_accumulation_steps``,
    ``max_grad_norm``, ``lr_scheduler_type``, …: what replay depends on) over
    ``total_steps`` optimizer steps; its replay is :func:`replay_segments`."""
    tf = _transformers()
    if int(total_steps) <= 0:
        raise IntegrationError("total_steps must be positive")
    if arguments.get("load_best_model_at_end"):
        raise IntegrationError(_BEST_MODEL, hint=_BEST_MODEL_HINT)
    arguments.setdefault("gradient_accumulation_steps", 1)
    for key in _QUIET:
        arguments.pop(key, None)
    with tempfile.TemporaryDirectory(prefix="polchain-hf-") as out:
        try:  # refused here, where the task is built, not once it trains or replays
            tf.TrainingArguments(output_dir=out, **{**_QUIET, **arguments})
        except (TypeError, ValueError) as exc:
            raise IntegrationError(
                f"TrainingArguments refuse the task's arguments: {exc}",
                hint="check the arguments passed to hf_task()",
            ) from None
    return TaskBundle(
        model=model,
        dataset=dataset,
        collate=collate,
        replayer=replay_segments,
        framework={_KEY: {"arguments": dict(arguments), "total_steps": int(total_steps)}},
        plan=TrainerPlan(
            micro_batches=int(arguments["gradient_accumulation_steps"]),
            micro_batch_size=_optional_int(arguments.get("per_device_train_batch_size")),
            total_steps=int(total_steps),
        ),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _settings(bundle: TaskBundle) -> tuple[dict[str, Any], int]:
    task = bundle.framework.get(_KEY)
    if task is None:
        raise IntegrationError("this task was not built with hf_task()")
    return dict(task["arguments"]), int(task["total_steps"])


def training_arguments(bundle: TaskBundle, output_dir: str, **extra: Any) -> Any:
    """``TrainingArguments`` with the task's settings; ``extra`` may set only what does
    not touch a training step (``max_steps``, ``dataloader_num_workers``, logging, saving,
    evaluation), never the task's settings or another argument replay depends on."""
    settings, _ = _settings(bundle)
    if extra.get("load_best_model_at_end"):
        raise IntegrationError(_BEST_MODEL, hint=_BEST_MODEL_HINT)
    clash = sorted(k for k in extra if k in settings and extra[k] != settings[k])
    if clash:
        raise IntegrationError(f"the task fixes {', '.join(clash)}: it cannot be changed here")
    fixed = sorted(k for k in extra if k not in settings and not _is_free(k))
    if fixed:
        raise IntegrationError(
            f"{', '.join(fixed)} would change the training step, and replay builds its "
            "Trainer from the task's arguments alone",
            hint="pass it to hf_task() in the task, so that training and replay share it",
        )
    merged = {**_QUIET, **settings, **extra}
    return _transformers().TrainingArguments(output_dir=output_dir, **merged)


def _check_step_arguments(bundle: TaskBundle, args: Any) -> None:
    """Refuse ``TrainingArguments`` whose step-relevant values differ from those replay
    uses (a trainer built by hand, not by :func:`training_arguments`). Building the replay's
    arguments resets accelerate's process state, so this runs before a Trainer sets it up."""
    if args is None:
        raise IntegrationError(
            "a recorded PolchainTrainer needs the task's TrainingArguments",
            hint="pass args=training_arguments(task, output_dir), or use polchain_trainer()",
        )
    ours = args.to_dict()
    replay = training_arguments(bundle, args.output_dir, max_steps=args.max_steps).to_dict()
    wrong = sorted(
        k for k in ours.keys() | replay.keys() if not _is_free(k) and ours.get(k) != replay.get(k)
    )
    if wrong:
        text = ", ".join(f"{k}={ours.get(k)!r} (replay: {replay.get(k)!r})" for k in wrong)
        raise IntegrationError(
            f"the Trainer's arguments would change the training step: {text}",
            hint="build them with training_arguments(task, ...) or polchain_trainer(); "
            "what the step depends on belongs in hf_task()",
        )


def _unwrap(part: Any, attr: str) -> Any:
    inner = getattr(part, attr, None)
    return inner if inner is not None and not callable(inner) else part


def _state(model: Any, optimizer: Any, scheduler: Any) -> TrainState:
    return TrainState(
        model,
        [_unwrap(optimizer, "optimizer")],
        [] if scheduler is None else [_unwrap(scheduler, "scheduler")],
    )


def _restore_buffers(
    model: Any, buffers: list[torch.Tensor], at_step_start: list[torch.Tensor], recorder: Recorder
) -> None:
    """Put back the buffers a cut step's forward passes changed; if the model replaced
    one, the state after the last step is lost: discard back to the last checkpoint."""
    if not buffers:
        return
    now = list(model.buffers())
    if len(now) != len(buffers) or any(a is not b for a, b in zip(now, buffers, strict=False)):
        recorder.discard_pending()  # the state after the last step is lost: use a checkpoint
        return
    torch._foreach_copy_(buffers, at_step_start)


_CLASSES: tuple[type, type, type] | None = None


def _classes() -> tuple[type, type, type]:
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    tf = _transformers()

    class Trainer(tf.Trainer):  # type: ignore[misc, name-defined]
        def __init__(
            self,
            *args: Any,
            batch_sampler: Any = None,
            total_steps: int | None = None,
            recorder: Recorder | None = None,
            task: TaskBundle | None = None,
            **kwargs: Any,
        ) -> None:
            if recorder is not None:
                batch_sampler = recorder.batch_sampler() if batch_sampler is None else batch_sampler
                total_steps = recorder.spec.total_steps if total_steps is None else total_steps
                callbacks = list(kwargs.pop("callbacks", None) or [])
                # first: a user's on_step_end that raises must not skip the recording
                kwargs["callbacks"] = [PolchainTrainerCallback(recorder, task), *callbacks]
            if batch_sampler is None or total_steps is None:
                raise IntegrationError("PolchainTrainer needs a recorder (or a batch sampler)")
            if task is not None:  # before the Trainer sets up its devices (see below)
                _check_step_arguments(task, kwargs.get("args", args[1] if len(args) > 1 else None))
            super().__init__(*args, **kwargs)
            self.polchain_batch_sampler = batch_sampler
            self.polchain_total_steps = int(total_steps)

        def train(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().train(*args, **kwargs)
            except BaseException:
                # no callback hook sees an error: leave the recorder at a recorded state
                for callback in self.callback_handler.callbacks:
                    if isinstance(callback, Recording):
                        callback.after_error()
                raise

        def get_train_dataloader(self) -> Any:
            return torch.utils.data.DataLoader(
                self.train_dataset,
                batch_sampler=self.polchain_batch_sampler,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                persistent_workers=self.args.dataloader_num_workers > 0,
            )

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            # the run's schedule, whatever part of it this trainer runs
            return super().create_scheduler(self.polchain_total_steps, optimizer)

    class Recording(tf.TrainerCallback):  # type: ignore[misc, name-defined]
        def __init__(self, recorder: Recorder, task: TaskBundle | None) -> None:
            self.recorder = recorder
            self.task = task
            self._phase = ""  # "forward" inside a step, "stepped" once the optimizer moved
            self._started = False
            self._model: Any = None
            self._buffers: list[torch.Tensor] = []  # the model's, with accumulation
            self._at_step_start: list[torch.Tensor] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            rec = self.recorder
            if self._started or (rec.step != 0 and not rec.resuming):
                raise IntegrationError(
                    f"this recorder is at step {rec.step}: a new train() starts the LR "
                    "schedule and the optimizer afresh, so its steps would not be the run's",
                    hint="record a run with one train() a process; after a crash, reopen "
                    "the proof with Recorder(..., resume=True) and train again",
                )
            self._started = True
            if state.global_step != 0:
                raise IntegrationError(
                    f"the Trainer starts at its step {state.global_step} "
                    "(resume_from_checkpoint?): its own checkpoint is not the run's state",
                    hint="resume with Recorder(..., resume=True) and no resume_from_checkpoint",
                )
            if self.task is not None:
                settings, total = _settings(self.task)
                check_settings("Hugging Face", settings, {k: getattr(args, k) for k in settings})
                if total != rec.spec.total_steps:
                    raise IntegrationError(
                        f"the task schedules {total} steps, the run's spec {rec.spec.total_steps}"
                    )
            if args.gradient_accumulation_steps != rec.spec.accumulation:
                raise IntegrationError(
                    f"gradient_accumulation_steps={args.gradient_accumulation_steps}, the "
                    f"run's spec says {rec.spec.accumulation} micro-batches per step"
                )
            left = rec.spec.total_steps - rec.step
            if state.max_steps > left:
                where = f" left after step {rec.step}" if rec.step else ""
                raise IntegrationError(
                    f"the trainer would take {state.max_steps} steps, the run has {left}{where}",
                    hint="pass max_steps (at most the steps left) to the TrainingArguments",
                )
            if args.fp16:
                raise IntegrationError("fp16 with a gradient scaler is not recorded: use bf16")
            if args.load_best_model_at_end:
                raise IntegrationError(_BEST_MODEL, hint=_BEST_MODEL_HINT)
            model = kw["model"]
            live = _state(model, kw["optimizer"], kw.get("lr_scheduler"))
            rec.attach(live.optimizers, live.schedulers)  # a resume restores them here
            self._model = model
            if rec.spec.accumulation > 1:  # a stop between micro-batches must undo a forward
                self._buffers = list(model.buffers())
                self._at_step_start = [b.detach().clone() for b in self._buffers]

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self._buffers:
                torch._foreach_copy_(self._at_step_start, self._buffers)
            seed_global_rng(self.recorder.step_seed("dropout"))
            self._phase = "forward"

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._phase = "stepped"

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.recorder.on_step_end()  # the run's own micro-batches and seeds
            self._phase = ""

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.after_error()  # a stop between micro-batches (should_training_stop)

        def after_error(self) -> None:
            """Leave the live state at the last recorded step: undo a cut step's forward
            passes (BatchNorm statistics), or, once its optimizer step ran, discard the
            steps since the last checkpoint (close(final=True) finalizes there)."""
            if self._phase == "forward":
                _restore_buffers(self._model, self._buffers, self._at_step_start, self.recorder)
            elif self._phase == "stepped":
                self.recorder.discard_pending()
            self._phase = ""

    class Replaying(tf.TrainerCallback):  # type: ignore[misc, name-defined]
        """Replays several segments in one ``train()`` (see :class:`SegmentPlan`)."""

        def __init__(self, jobs: Sequence[ReplayJob]) -> None:
            self.plan = SegmentPlan(jobs)
            self._state: TrainState | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._state = _state(kw["model"], kw["optimizer"], kw.get("lr_scheduler"))

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            assert self._state is not None
            self.plan.begin(state.global_step, self._state)
            seed_global_rng(int(self.plan.step(state.global_step).seeds["dropout"]))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            assert self._state is not None
            self.plan.end(state.global_step - 1, self._state)

    _CLASSES = (Trainer, Recording, Replaying)
    return _CLASSES


def __getattr__(name: str) -> Any:
    if name == "PolchainTrainer":
        return _classes()[0]
    raise AttributeError(name)


def PolchainTrainerCallback(recorder: Recorder, task: TaskBundle | None = None) -> Any:  # noqa: N802
    """A ``transformers.TrainerCallback`` recording the run into ``recorder``; with the
    ``task`` from :func:`hf_task` it refuses ``TrainingArguments`` that differ from the
    task's."""
    return _classes()[1](recorder, task)


def polchain_trainer(
    bundle: TaskBundle, recorder: Recorder, output_dir: str, **arguments: Any
) -> Any:
    """A :class:`PolchainTrainer` for the task's model and data with the task's
    ``TrainingArguments`` (``arguments`` add others, e.g. ``max_steps`` for an early stop,
    ``dataloader_num_workers``), recording into ``recorder``; a resumed recorder
    continues the run from its last checkpoint (``max_steps`` counts from there)."""
    left = recorder.spec.total_steps - recorder.step
    if left <= 0:
        raise IntegrationError(
            f"the recorder is at step {recorder.step}, the run's last: nothing is left to train",
            hint="close(final=True) finalizes the run",
        )
    arguments.setdefault("max_steps", left)
    return _classes()[0](
        model=bundle.model,
        args=training_arguments(bundle, output_dir, **arguments),
        train_dataset=bundle.data,
        data_collator=bundle.collate_fn,
        recorder=recorder,
        task=bundle,
    )


def replay_segments(bundle: TaskBundle, jobs: Sequence[ReplayJob]) -> list[dict[str, torch.Tensor]]:
    """Replay every job's steps from its own checkpoint through one
    :class:`PolchainTrainer` with the task's arguments; return the states after them (the
    verifier's ``replayer``)."""
    import logging

    settings, total = _settings(bundle)
    accumulation = int(settings["gradient_accumulation_steps"])
    batches = [mb for job in jobs for mb in segment_batches(job.steps, accumulation)]
    if not batches:
        return [dict(job.start) for job in jobs]
    logging.getLogger("transformers").setLevel(logging.ERROR)
    trainer_cls, _, replaying = _classes()
    callback = replaying(jobs)
    with tempfile.TemporaryDirectory(prefix="polchain-hf-") as out:
        trainer = trainer_cls(
            model=bundle.model,
            args=training_arguments(bundle, out, max_steps=callback.plan.total),
            train_dataset=bundle.data,
            data_collator=bundle.collate_fn,
            batch_sampler=batches,
            total_steps=total,
            callbacks=[callback],
        )
        trainer.remove_callback(_transformers().trainer_callback.PrinterCallback)  # quiet
        trainer.train()
    return callback.plan.results()
