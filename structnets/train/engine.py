"""The one training engine: every task is data + a model + metrics + one call of :func:`fit`.

::

    for each epoch (or until `steps`):                 config.epochs / config.steps
        for batch in batches(epoch):                   the task's data, this rank's share
            loss = loss_fn(model, batch)
            backward; clip_grad_norm_                  config.clip_grad_norm
            optimizer.step(); lr schedule step         config.schedule, warm-up, by steps or clock
            EMA update                                 config.ema_decay (torch's AveragedModel)
            every `eval_every` steps (or each epoch):
                metrics = validate(EMA or model)       early stopping, the best weights kept
        stop at max_seconds (rank 0 decides for all)

The pieces are torch's own: ``LambdaLR`` / ``ReduceLROnPlateau`` for the learning rate,
``AveragedModel`` with ``get_ema_multi_avg_fn`` for the weight average, ``clip_grad_norm_``,
``DistributedDataParallel`` under ``torchrun`` (see :mod:`structnets.train.distributed`).
Lightning Fabric would give the same loop, but it is one more large dependency for what is
a hundred lines here, and the level-loop models need no accelerator plumbing beyond
``.to(device)``.

The engine keeps no files of its own except the resume state (``train_state.pt``, with
``run_dir``): results and checkpoints are the task's, written through
:class:`structnets.train.checkpoint.RunDirectory`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, atomic_write
from .distributed import decide, world

__all__ = [
    "LRSchedule",
    "StopReason",
    "TrainConfig",
    "TrainResult",
    "fit",
    "seed_everything",
    "clip_gradients",
    "lr_factor",
    "resumed_step",
    "NonFiniteLossError",
]

logger = logging.getLogger(__name__)

RESUME_FILE = "train_state.pt"


class LRSchedule(enum.Enum):
    """How the learning rate moves over training (after ``warmup_steps`` of linear warm-up)."""

    CONSTANT = "constant"
    #: Cosine decay from ``lr`` to ``min_lr_ratio * lr`` over the run.
    COSINE = "cosine"
    #: Exponential decay from ``lr`` to ``min_lr_ratio * lr`` over the run (chemprop's
    #: Noam-like schedule, with the warm-up starting from ``min_lr_ratio * lr``).
    EXPONENTIAL = "exponential"
    #: ``ReduceLROnPlateau`` on the validation metric (factor 0.7, patience 5).
    PLATEAU = "plateau"


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite: training stops before the weights are kept."""


def _non_finite(what: str, value: float, step: int, first_step: int, description: str) -> str:
    """The error for a non-finite loss or gradient: where, and the likely cause."""
    if step == first_step + 1:
        cause = (
            "at the run's first step this usually means NaN or infinity in the inputs or targets, "
            "or outputs that overflow from the start (check the data and the model's scale)"
        )
    elif what == "loss":
        cause = "after finite steps this usually means training diverged: try a lower --lr, or --clip-grad-norm"
    else:
        cause = (
            "with a finite loss this usually means an operation whose derivative is infinite here "
            "(a square root or logarithm at 0, a division by a vanishing norm) or an overflow in backprop"
        )
    return f"{description}: the training {what} is {value} at step {step}; nothing was saved ({cause})"


class StopReason(enum.Enum):
    """Why :func:`fit` returned."""

    DONE = "done"  # all epochs or steps
    TIME = "time"  # the max_seconds budget
    EARLY = "early"  # no validation improvement for `patience` validations


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What every task's training shares; each task gives its own defaults.

    Attributes:
        epochs: passes over the training data; None to count steps instead.
        steps: optimiser steps; with epochs too, whichever ends first.
        max_seconds: wall-clock budget for training; stops after the step that crosses it.
        batch_size: examples per optimiser step.
        lr: peak learning rate.
        schedule: learning-rate schedule after the warm-up (constant, cosine, exponential, plateau).
        warmup_steps: steps of linear learning-rate warm-up.
        min_lr_ratio: final learning rate of the cosine or exponential schedule, relative to lr.
        plateau_min_lr: the plateau schedule's floor (an absolute learning rate); none for lr / 100.
        lr_by_clock: run the schedule over max_seconds when the clock would end training first.
        weight_decay: L2 penalty added by the optimiser.
        clip_grad_norm: largest global gradient norm (clip_grad_norm_); none to only measure it.
        ema_decay: decay of an exponential moving average of the weights, which is then what
            is validated and kept; 0 or none for no average.
        patience: validations without improvement before stopping early; none never stops early.
        eval_every: steps between validations when counting steps; epochs validate once each.
        log_every: steps averaged into each training-loss entry of the history.
        seed: seed of torch, numpy and Python's random for initialisation and data order.
        device: torch device to train on (cpu, cuda, cuda:1, ...).
        progress: show a progress bar.
        resume: a run directory (or its train_state.pt) to continue training from.
    """

    epochs: int | None = None
    steps: int | None = None
    max_seconds: float | None = dataclasses.field(default=None, metadata={"aliases": ("--max-train-seconds",)})
    batch_size: int = 32
    lr: float = 1e-3
    schedule: LRSchedule = LRSchedule.CONSTANT
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    plateau_min_lr: float | None = None
    lr_by_clock: bool = False
    weight_decay: float = 0.0
    clip_grad_norm: float | None = None
    ema_decay: float | None = None
    patience: int | None = None
    eval_every: int | None = None
    log_every: int = 25
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    resume: Path | None = None

    def __post_init__(self) -> None:
        if self.epochs is None and self.steps is None:
            raise ValueError("give epochs or steps (or both)")
        for name in ("epochs", "steps", "batch_size", "eval_every", "patience", "log_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        for name in ("max_seconds", "lr", "clip_grad_norm"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.plateau_min_lr is not None and not self.plateau_min_lr >= 0:
            raise ValueError(f"plateau_min_lr must be >= 0, got {self.plateau_min_lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("warmup_steps and weight_decay must be >= 0 and min_lr_ratio within [0, 1]")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1) (0 for no average), got {self.ema_decay}")
        if self.ema_decay == 0:  # `--ema-decay 0` means no average, for every task alike
            object.__setattr__(self, "ema_decay", None)


@dataclasses.dataclass
class TrainResult:
    """What :func:`fit` did. ``model`` holds the kept weights (the best validated, else the last).

    Attributes:
        history: one dict per log entry (``step``, ``epoch``, ``train_loss``, ``lr``,
            ``grad_norm``) and per validation (``step``, ``epoch``, the validation metrics).
        best: the kept validation's entry (None without validation).
        steps, epochs: optimiser steps taken and epochs begun.
        seconds: wall-clock training time.
        clipped_steps: steps whose gradient norm exceeded ``clip_grad_norm``.
        stop: why training ended.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    steps: int
    epochs: int
    seconds: float
    clipped_steps: int
    stop: StopReason

    def timing(self) -> dict[str, Any]:
        """What a run's ``timing.json`` holds of the training: seconds and rates, apart from the results."""
        return {
            "train_seconds": self.seconds,
            "steps": self.steps,
            "epochs": self.epochs,
            "seconds_per_epoch": self.seconds / max(1, self.epochs),
            "steps_per_second": self.steps / self.seconds if self.seconds > 0 else 0.0,
            "stop": self.stop.value,
        }

    @property
    def train_history(self) -> list[dict[str, Any]]:
        return [h for h in self.history if "train_loss" in h]

    @property
    def validation_history(self) -> list[dict[str, Any]]:
        return [h for h in self.history if "train_loss" not in h]


def seed_everything(seed: int) -> None:
    """Seeds torch, numpy and Python's ``random``; call it before building the model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def clip_gradients(parameters: Iterable[nn.Parameter] | nn.Module, max_norm: float | None) -> float:
    """The global L2 gradient norm, after rescaling it to at most ``max_norm`` (None only measures).

    Gradient-norm clipping (Pascanu et al. 2013) keeps one exploding step of backprop through
    time from wrecking the weights; this is torch's own ``clip_grad_norm_``.
    """
    params = parameters.parameters() if isinstance(parameters, nn.Module) else parameters
    if max_norm is not None and not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be a positive number, got {max_norm}")
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    return float(torch.nn.utils.clip_grad_norm_(params, math.inf if max_norm is None else max_norm))


def lr_factor(config: TrainConfig, progress: float, step: int) -> float:
    """The learning rate relative to ``config.lr`` at ``step``, ``progress`` in [0, 1] through the run."""
    low = config.min_lr_ratio
    if step < config.warmup_steps:
        start = low if config.schedule is LRSchedule.EXPONENTIAL else 0.0
        return start + (1 - start) * (step + 1) / config.warmup_steps
    if config.schedule is LRSchedule.COSINE:
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if config.schedule is LRSchedule.EXPONENTIAL:
        return low ** min(1.0, progress) if low > 0 else 1.0 - min(1.0, progress)
    return 1.0


def _rng_state() -> dict[str, Tensor]:
    """The global generators' states as tensors, so that the resume file loads with weights_only."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    _, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_rest": torch.tensor([float(position), float(has_gauss), float(cached)], dtype=torch.float64),
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": torch.tensor(math.nan if gauss is None else gauss, dtype=torch.float64),
    }


def _set_rng_state(state: Mapping[str, Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    position, has_gauss, cached = state["numpy_rest"].tolist()
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(position), int(has_gauss), cached)
    )
    gauss = float(state["python_gauss"])
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None if math.isnan(gauss) else gauss))


class _Clock:
    """Training seconds, continued across a resume."""

    def __init__(self, already: float = 0.0) -> None:
        self.started, self.already = time.perf_counter(), already

    def __call__(self) -> float:
        return self.already + time.perf_counter() - self.started


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batches: Callable[[int], Iterable[Any]],
    config: TrainConfig,
    *,
    validate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    monitor: str = "val_loss",
    maximize: bool = False,
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
    steps_per_epoch: int | None = None,
    run_dir: str | Path | None = None,
    save_every: int | None = None,
    description: str = "train",
) -> TrainResult:
    """Trains ``model`` under ``config`` and returns it with the kept weights loaded.

    Args:
        model: the model, already on ``config.device``; under torchrun it is wrapped in
            ``DistributedDataParallel`` for the loop and handed back unwrapped.
        loss_fn: ``loss_fn(model, batch)`` -> scalar loss to minimise.
        batches: ``batches(epoch)`` -> this epoch's batches (this rank's share under
            torchrun, e.g. through :func:`structnets.train.distributed.shard`). A step-counted
            task may return an endless iterator.
        config: the shared training settings.
        validate: ``validate(model)`` -> metrics; called each epoch, or every
            ``config.eval_every`` steps, and at the end, on the EMA weights when there are.
            Its ``monitor`` entry picks the weights to keep and drives early stopping and the
            plateau schedule.
        monitor: the validation metric that decides; ``maximize`` when higher is better.
        optimizer: ``optimizer(parameters)`` -> the optimiser (default Adam at ``config.lr``
            with ``config.weight_decay``); the engine sets its learning rate.
        steps_per_epoch: batches per epoch, for the schedule's length when counting epochs
            (measured from ``len(batches(0))`` when omitted and available).
        run_dir: where ``train_state.pt`` (the resume state) is written every ``save_every``
            steps and at each validation; None keeps none.
        description: the progress bar's label.
    """
    here = world()
    device = torch.device(config.device)
    clock = _Clock()
    make = optimizer or (lambda p: torch.optim.Adam(p, lr=config.lr, weight_decay=config.weight_decay))
    net = model
    if here.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make(net.parameters())
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay)) if config.ema_decay else None

    if steps_per_epoch is None and config.epochs is not None:
        first = batches(0)
        steps_per_epoch = len(first) if hasattr(first, "__len__") else None
    total = config.steps
    if config.epochs is not None and steps_per_epoch is not None:
        total = min(total or math.inf, config.epochs * steps_per_epoch)
    if config.schedule in (LRSchedule.COSINE, LRSchedule.EXPONENTIAL) and total is None:
        raise ValueError("a decaying schedule needs steps, or epochs of known length (steps_per_epoch)")

    def progress_of(step: int) -> float:
        done = (step - config.warmup_steps) / max(1, (total or 1) - config.warmup_steps)
        if config.lr_by_clock and config.max_seconds:
            done = max(done, clock() / config.max_seconds)
        return done

    def warmup_of(step: int) -> int:
        # By the clock, the warm-up too is its share of max_seconds (warmup_steps / total of it).
        if config.lr_by_clock and config.max_seconds and total:
            return max(step, int(total * clock() / config.max_seconds))
        return step

    # Groups built with their own rate (embeddings at a multiple of lr) keep their ratio to it.
    base_lr = float(opt.defaults.get("lr") or config.lr)
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"] = config.lr * float(group["lr"]) / base_lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(config, progress_of(step), warmup_of(step))
    )
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="max" if maximize else "min",
            factor=0.7,
            patience=5,
            min_lr=config.lr * 1e-2 if config.plateau_min_lr is None else config.plateau_min_lr,
        )
        if config.schedule is LRSchedule.PLATEAU
        else None
    )
    if plateau is not None:
        scheduler = None

    step, epoch, clipped, stale = 0, 0, 0, 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, Tensor] | None = None
    if config.resume is not None:
        state = _load_resume(config.resume, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        if plateau is not None and state.get("plateau"):
            plateau.load_state_dict(state["plateau"])
        if averaged is not None and state.get("averaged"):
            averaged.load_state_dict(state["averaged"])
        step, epoch, clipped, stale = state["step"], state["epoch"], state["clipped"], state["stale"]
        history, best, best_state = list(state["history"]), state["best"] or None, state["best_state"] or None
        clock = _Clock(state["seconds"])
        _set_rng_state(state["rng"])
        logger.info("resumed from %s at step %d, epoch %d", config.resume, step, epoch)

    def kept_model() -> nn.Module:
        return averaged.module if averaged is not None else model

    def save_state() -> None:
        if run_dir is None or not here.main:
            return
        import io

        buffer = io.BytesIO()
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "plateau": plateau.state_dict() if plateau is not None else {},
                "averaged": averaged.state_dict() if averaged is not None else {},
                "step": step,
                "epoch": epoch,
                "clipped": clipped,
                "stale": stale,
                "history": history,
                "best": best or {},
                "best_state": best_state or {},
                "seconds": clock(),
                "rng": _rng_state(),
            },
            buffer,
        )
        atomic_write(Path(run_dir) / RESUME_FILE, buffer.getvalue(), durable=False)

    def run_validation() -> bool:
        """Validates, keeps the best weights; True when early stopping says stop."""
        nonlocal best, best_state, stale
        if validate is None:
            return False
        evaluated = kept_model()
        was = evaluated.training
        evaluated.eval()
        with torch.no_grad():
            metrics = dict(validate(evaluated))
        evaluated.train(was)
        if monitor not in metrics:
            raise KeyError(f"validate() returned {sorted(metrics)}, without the monitored {monitor!r}")
        value = float(metrics[monitor])
        entry = {"step": step, "epoch": epoch, **{k: float(v) for k, v in metrics.items()}}
        history.append(entry)
        if plateau is not None:
            plateau.step(value)
        improved = best is None or (value > best[monitor] if maximize else value < best[monitor])
        if improved and math.isfinite(value):
            best, stale = entry, 0
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
        else:
            stale += 1
        save_state()
        return decide(config.patience is not None and stale >= config.patience, device)

    stop = StopReason.DONE
    bar = tqdm(total=total, initial=step, desc=description, disable=not (config.progress and here.main), leave=False)
    window_loss: list[float] = []
    window_norm: list[float] = []
    validated_at = step if config.resume is not None else -1
    first_step = step  # where this run (or resumption) began, for the non-finite error's cause
    net.train()
    with bar:
        while stop is StopReason.DONE:
            if config.epochs is not None and epoch >= config.epochs:
                break
            if config.steps is not None and step >= config.steps:
                break
            for batch in batches(epoch):
                loss = loss_fn(net, batch)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise NonFiniteLossError(_non_finite("loss", value, step + 1, first_step, description))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = clip_gradients(net, config.clip_grad_norm)
                if not math.isfinite(norm):
                    raise NonFiniteLossError(_non_finite("gradient norm", norm, step + 1, first_step, description))
                clipped += int(config.clip_grad_norm is not None and norm > config.clip_grad_norm)
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                if averaged is not None:
                    averaged.update_parameters(model)
                step += 1
                window_loss.append(value)
                window_norm.append(norm)
                if len(window_loss) == config.log_every:
                    history.append(_train_entry(step, epoch, window_loss, window_norm, opt))
                    bar.set_postfix(loss=f"{history[-1]['train_loss']:.4g}")
                bar.update()
                if config.eval_every is not None and step % config.eval_every == 0:
                    validated_at = step
                    if run_validation():
                        stop = StopReason.EARLY
                if save_every is not None and step % save_every == 0:
                    save_state()
                if config.max_seconds is not None and stop is StopReason.DONE:
                    if decide(clock() >= config.max_seconds, device):
                        stop = StopReason.TIME
                if stop is not StopReason.DONE or (config.steps is not None and step >= config.steps):
                    break
            epoch += 1  # an epoch begun counts, so a resumed run starts the next one
            if config.eval_every is None and validated_at != step:
                validated_at = step
                if run_validation() and stop is StopReason.DONE:
                    stop = StopReason.EARLY
    if window_loss:
        history.append(_train_entry(step, epoch, window_loss, window_norm, opt))
    if validate is not None and validated_at != step:
        run_validation()
    seconds = clock()
    save_state()  # before the kept weights replace the last: a resume continues from the last
    if averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    logger.info("%s: %d steps, %d epochs in %.1f s (%s)", description, step, epoch, seconds, stop.value)
    return TrainResult(model, history, best, step, epoch, seconds, clipped, stop)


def _train_entry(
    step: int, epoch: int, losses: list[float], norms: list[float], opt: torch.optim.Optimizer
) -> dict[str, Any]:
    """One training entry of the history: the window's mean loss and gradient norm; empties the window."""
    entry = {
        "step": step,
        "epoch": epoch,
        "train_loss": sum(losses) / len(losses),
        "grad_norm": sum(norms) / len(norms),
        "lr": opt.param_groups[0]["lr"],
    }
    losses.clear()
    norms.clear()
    return entry


def resumed_step(resume: str | Path | None) -> int:
    """Optimiser steps already taken by the run that ``resume`` (a run directory or its
    ``train_state.pt``) continues; 0 without one, or when there is no state (``fit`` then
    reports the missing file). Endless batch streams use it to skip what was trained on."""
    if resume is None:
        return 0
    path = Path(resume)
    path = path / RESUME_FILE if path.is_dir() else path
    if not path.is_file():
        return 0
    return int(_load_resume(path, map_location="cpu")["step"])


def _load_resume(path: str | Path, map_location: Any) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / RESUME_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no training state at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file: one line naming it
        raise CheckpointError(f"{path}: not a readable training state: {str(error).splitlines()[0][:200]}") from None
