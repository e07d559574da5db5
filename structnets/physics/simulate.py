"""The learned particle simulator: generate data, train, evaluate, roll out, render, demo.

``structnets simulate generate --out DATA`` writes an SPH dataset (:mod:`structnets.sph`);
``train --data DATA --out RUN`` fits :class:`structnets.models.gns.LearnedSimulator` on
one-step accelerations with random-walk noise on the input history (Sanchez-Gonzalez et
al. 2020); ``evaluate --model RUN --data DATA --split test --out DIR`` writes
``metrics.json`` with ``one_step_mse``, ``rollout_mse`` and the same two for the
constant-velocity baseline from the same history; ``render`` turns a saved rollout into a
side-by-side GIF; ``demo --out DIR`` does all of it in a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..models.gns import HISTORY, GNSConfig, LearnedSimulator
from ..train.checkpoint import clip_gradients, load_checkpoint
from .particles import SimulationMetadata, Trajectory, read_metadata, read_trajectories

__all__ = ["TrainConfig", "train", "evaluate", "render", "register"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    latent_size: int = 128
    message_passing_steps: int = 10
    steps: int = 20000
    max_seconds: float | None = None
    batch_size: int = 2  # windows (whole scenes) per step
    lr: float = 1e-3
    final_lr: float = 1e-5
    noise_std: float = 6.7e-4  # of the last input position, as in the paper for water
    seed: int = 0
    device: str = "cpu"


def _windows(trajectories: list[Trajectory]) -> list[tuple[int, int]]:
    return [(k, t) for k, traj in enumerate(trajectories) for t in range(HISTORY, traj.position.shape[0] - 1)]


def _load_model(run: Path, device: str = "cpu") -> LearnedSimulator:
    checkpoint = load_checkpoint(Path(run) / "model.pt", map_location=device)
    model = LearnedSimulator(SimulationMetadata(**checkpoint["metadata"]), GNSConfig(**checkpoint["gns_config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def train(
    config: TrainConfig, data: Path, out_dir: Path, progress: bool = True, resume: bool = False
) -> dict[str, Any]:
    """Trains; with ``resume``, continues from ``out_dir/model.pt`` (weights, optimiser, step).

    Under ``torchrun`` each process draws its own windows and DistributedDataParallel
    averages the gradients (gloo on CPU, nccl on GPU); rank 0 writes the checkpoint.
    """
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(config.device)
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    try:
        return _train(config, data, out_dir, progress and rank == 0, resume, rank, world, device)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _train(
    config: TrainConfig,
    data: Path,
    out_dir: Path,
    progress: bool,
    resume: bool,
    rank: int,
    world: int,
    device: torch.device,
) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, rank])
    metadata = read_metadata(data)
    trajectories = read_trajectories(Path(data) / "train.npz", metadata)
    windows = _windows(trajectories)
    gns = GNSConfig(latent_size=config.latent_size, message_passing_steps=config.message_passing_steps)
    model = LearnedSimulator(metadata, gns).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    first = 1
    if resume:
        checkpoint = load_checkpoint(Path(out_dir) / "model.pt", map_location=device)
        if checkpoint["gns_config"] != dataclasses.asdict(gns):
            raise ValueError(
                f"{out_dir}/model.pt was trained with {checkpoint['gns_config']}, not {dataclasses.asdict(gns)}"
            )
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        first = int(checkpoint["step"]) + 1
        rng = np.random.default_rng([config.seed, rank, first])
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    positions = [torch.from_numpy(t.position).to(device) for t in trajectories]
    kinds = [torch.from_numpy(t.particle_type).to(device) for t in trajectories]
    velocity_noise = config.noise_std / math.sqrt(HISTORY)
    history_log, started = [], time.perf_counter()
    steps = range(first, config.steps + 1)
    # Under a time budget the step count is not the end to show: count steps, no total.
    bar = tqdm(steps if config.max_seconds is None else iter(steps), desc="simulate", unit="step", disable=not progress)
    step = first - 1
    for step in bar:
        chosen = [windows[i] for i in rng.integers(0, len(windows), config.batch_size)]
        hist, nxt, kind, batch = [], [], [], []
        for b, (k, t) in enumerate(chosen):
            hist.append(positions[k][t - HISTORY : t + 1].transpose(0, 1))  # [N, 6, D]
            nxt.append(positions[k][t + 1])
            kind.append(kinds[k])
            batch.append(torch.full((positions[k].shape[1],), b, device=device))
        history, target_next = torch.cat(hist), torch.cat(nxt)
        # Random-walk noise: velocity noise accumulated over the history, the first
        # position unperturbed; the target moves with the last position's noise, so the
        # model learns to undo the velocity error it was fed.
        noise = torch.randn(history.shape[0], HISTORY, history.shape[2], device=device) * velocity_noise
        noise = torch.cat([torch.zeros_like(noise[:, :1]), noise.cumsum(1)], 1)  # [N, 6, D]
        noisy = history + noise
        target_acc = (target_next + noise[:, -1]) - 2 * noisy[:, -1] + noisy[:, -2]
        target = (target_acc - model.acc_mean) / model.acc_std
        loss = F.mse_loss(net(noisy, torch.cat(kind), torch.cat(batch)), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(model, 1.0)
        optimizer.step()
        # Exponential decay from lr to final_lr over the run: over the steps, or over the
        # time budget when that ends the run first (then the schedule follows the clock).
        done = step / config.steps
        if config.max_seconds is not None:
            done = max(done, (time.perf_counter() - started) / config.max_seconds)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * (config.final_lr / config.lr) ** min(done, 1.0)
        if step % 50 == 0 or step == 1:
            history_log.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - started})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        out_of_time = config.max_seconds is not None and time.perf_counter() - started > config.max_seconds
        if world > 1:  # rank 0's clock decides for all, so that all stop at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            torch.distributed.broadcast(flag, 0)
            out_of_time = bool(flag.item())
        if out_of_time:
            break
    seconds = time.perf_counter() - started
    metrics = {
        "steps": step,
        "seconds": seconds,
        "steps_per_second": (step - first + 1) / seconds,
        "processes": world,
        "history": history_log,
    }
    if rank != 0:
        return metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "gns_config": dataclasses.asdict(gns),
            "metadata": metadata.to_json(),
            "train_config": dataclasses.asdict(config),
        },
        out_dir / "model.pt",
    )
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


@torch.no_grad()
def evaluate(run: Path, data: Path, split: str, out_dir: Path, max_trajectories: int | None = None) -> dict[str, Any]:
    """One-step and rollout MSE of the model and of constant-velocity extrapolation."""
    model = _load_model(run)
    metadata = read_metadata(data)
    trajectories = read_trajectories(Path(data) / f"{split}.npz", metadata)[:max_trajectories]
    one, one_base, roll, roll_base = [], [], [], []
    saved = None
    started = time.perf_counter()
    rollout_steps = 0
    for trajectory in trajectories:
        position = torch.from_numpy(trajectory.position)
        kind = torch.from_numpy(trajectory.particle_type)
        frames = position.shape[0]
        for t in range(HISTORY, frames - 1, 5):  # every fifth window for the one-step figure
            history = position[t - HISTORY : t + 1].transpose(0, 1)
            one.append(F.mse_loss(model.step(history, kind), position[t + 1]).item())
            one_base.append(F.mse_loss(2 * position[t] - position[t - 1], position[t + 1]).item())
        predicted = model.rollout(position[: HISTORY + 1], kind, frames - HISTORY - 1)
        rollout_steps += frames - HISTORY - 1
        truth = position[HISTORY + 1 :]
        velocity = position[HISTORY] - position[HISTORY - 1]
        baseline = position[HISTORY] + velocity * torch.arange(1, frames - HISTORY).view(-1, 1, 1)
        roll.append(F.mse_loss(predicted, truth).item())
        roll_base.append(F.mse_loss(baseline, truth).item())
        if saved is None:
            saved = (position.numpy(), torch.cat([position[: HISTORY + 1], predicted]).numpy())
    metrics = {
        "split": split,
        "trajectories": len(trajectories),
        "one_step_mse": float(np.mean(one)),
        "rollout_mse": float(np.mean(roll)),
        "baseline_one_step_mse": float(np.mean(one_base)),
        "baseline_rollout_mse": float(np.mean(roll_base)),
        "rollout_steps_per_second": rollout_steps / (time.perf_counter() - started),
    }
    metrics["rollout_ratio_to_baseline"] = metrics["rollout_mse"] / metrics["baseline_rollout_mse"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    np.savez_compressed(out_dir / "rollout.npz", truth=saved[0], predicted=saved[1], bounds=np.array(metadata.bounds))
    return metrics


def render(rollout: Path, out: Path, every: int = 4) -> Path:
    """A side-by-side GIF of ground truth and prediction from ``evaluate``'s rollout.npz."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with np.load(rollout) as archive:
        truth, predicted, bounds = archive["truth"], archive["predicted"], archive["bounds"]
    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    dots = []
    for ax, title in zip(axes, ("ground truth (SPH)", "learned simulator")):
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        dots.append(ax.scatter([], [], s=4))
    frames = list(range(0, truth.shape[0], every))

    def draw(k: int):
        for dot, data in zip(dots, (truth, predicted)):
            dot.set_offsets(data[k])
        return dots

    animation = FuncAnimation(fig, draw, frames=frames, blit=False)
    animation.save(out, writer=PillowWriter(fps=20))
    return out


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("simulate", help="learned particle simulation (GNS) on SPH ground truth")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="simulate an SPH dataset (metadata.json, train/valid/test.npz)")
    gen.add_argument("--out", required=True, type=Path)
    gen.add_argument("--frames", type=int, default=200)
    gen.add_argument("--train", type=int, default=8)
    gen.add_argument("--valid", type=int, default=2)
    gen.add_argument("--test", type=int, default=2)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=_generate_cli)
    tr = actions.add_parser("train", help="train the learned simulator on a dataset")
    tr.add_argument("--data", required=True, type=Path)
    tr.add_argument("--out", required=True, type=Path)
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("device", "max_seconds"):
            continue
        tr.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=type(getattr(defaults, field.name)),
            default=getattr(defaults, field.name),
        )
    tr.add_argument("--max-seconds", type=float)
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/model.pt up to --steps")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train_cli)
    ev = actions.add_parser("evaluate", help="one-step and rollout MSE against constant velocity")
    ev.add_argument("--model", required=True, type=Path)
    ev.add_argument("--data", required=True, type=Path)
    ev.add_argument("--split", default="test")
    ev.add_argument("--out", required=True, type=Path)
    ev.set_defaults(func=_evaluate_cli)
    ro = actions.add_parser("rollout", help="roll one trajectory out and save truth and prediction as npz")
    ro.add_argument("--model", required=True, type=Path)
    ro.add_argument("--data", required=True, type=Path)
    ro.add_argument("--split", default="test")
    ro.add_argument("--trajectory", type=int, default=0, help="index within the split")
    ro.add_argument("--out", required=True, type=Path)
    ro.set_defaults(func=_rollout_cli)
    re = actions.add_parser("render", help="a side-by-side GIF from evaluate's rollout.npz")
    re.add_argument("--rollout", required=True, type=Path)
    re.add_argument("--out", required=True, type=Path)
    re.set_defaults(func=lambda args: print(f"wrote {render(args.rollout, args.out)}") or 0)
    demo = actions.add_parser("demo", help="generate, train a few minutes, evaluate, render: the physics rollout demo")
    demo.add_argument("--out", required=True, type=Path)
    demo.add_argument("--minutes", type=float, default=4.0)
    demo.set_defaults(func=_demo_cli)
    return parser


def _generate_cli(args: argparse.Namespace) -> int:
    from .sph import generate_dataset

    counts = {"train": args.train, "valid": args.valid, "test": args.test}
    generate_dataset(args.out, trajectories=counts, frames=args.frames, seed=args.seed)
    print(f"wrote {args.out}/metadata.json, train.npz, valid.npz, test.npz")
    return 0


def _train_cli(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    metrics = train(TrainConfig(**values), args.data, args.out, progress=not args.no_progress, resume=args.resume)
    print(f"{metrics['steps']} steps in {metrics['seconds']:.0f} s; wrote {args.out}/model.pt")
    return 0


def _rollout_cli(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    metadata = read_metadata(args.data)
    trajectories = read_trajectories(Path(args.data) / f"{args.split}.npz", metadata)
    if not 0 <= args.trajectory < len(trajectories):
        raise ValueError(f"--trajectory {args.trajectory}: the {args.split} split has {len(trajectories)} trajectories")
    position = torch.from_numpy(trajectories[args.trajectory].position)
    kind = torch.from_numpy(trajectories[args.trajectory].particle_type)
    predicted = model.rollout(position[: HISTORY + 1], kind, position.shape[0] - HISTORY - 1)
    full = torch.cat([position[: HISTORY + 1], predicted]).numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, truth=position.numpy(), predicted=full, bounds=np.array(metadata.bounds))
    mse = float(((full[HISTORY + 1 :] - position.numpy()[HISTORY + 1 :]) ** 2).mean())
    print(f"rollout MSE {mse:.3g}; wrote {args.out} (render it with structnets simulate render)")
    return 0


def _print(metrics: dict) -> None:
    print(
        f"one-step MSE {metrics['one_step_mse']:.3g} (constant velocity {metrics['baseline_one_step_mse']:.3g}); "
        f"rollout MSE {metrics['rollout_mse']:.3g} (constant velocity {metrics['baseline_rollout_mse']:.3g}, "
        f"ratio {metrics['rollout_ratio_to_baseline']:.3f})"
    )


def _evaluate_cli(args: argparse.Namespace) -> int:
    _print(evaluate(args.model, args.data, args.split, args.out))
    print(f"wrote {args.out}/metrics.json, rollout.npz")
    return 0


def _demo_cli(args: argparse.Namespace) -> int:
    from .sph import generate_dataset

    data = args.out / "data"
    if not (data / "metadata.json").is_file():
        print("generating SPH trajectories ...")
        generate_dataset(data, frames=200, seed=0)
    config = TrainConfig(latent_size=64, message_passing_steps=5, max_seconds=args.minutes * 60, steps=100000)
    train(config, data, args.out / "model")
    metrics = evaluate(args.out / "model", data, "test", args.out)
    _print(metrics)
    render(args.out / "rollout.npz", args.out / "rollout.gif")
    print(f"wrote {args.out}/metrics.json, rollout.gif")
    return 0
