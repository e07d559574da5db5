"""The learned particle simulator: generate data, train, evaluate, roll out, render, demo.

``structnets simulate generate --out DATA`` writes an SPH dataset (:mod:`structnets.physics.sph`);
``train --data DATA --out RUN`` fits :class:`structnets.models.gns.LearnedSimulator` on
one-step accelerations with random-walk noise on the input history (Sanchez-Gonzalez et
al. 2020), through :func:`structnets.train.engine.fit`, keeping the weights best on the
valid split; ``evaluate --model RUN --data DATA --split test --out DIR`` writes
``metrics.json`` with ``one_step_mse``, ``rollout_mse`` and the same two for the
constant-velocity baseline from the same history (:mod:`structnets.physics.metrics`);
``render`` turns a saved rollout into a side-by-side GIF; ``demo --out DIR`` does all of
it in a few minutes on a CPU; ``convert SRC DST`` rewrites a (trusted) PyTorch GNS dataset
in structnets' layout. ``--data`` is a folder in structnets' layout, LagrangeBench's HDF5 or
DeepMind's TFRecord (``--format``, by default told by the file names: :mod:`.formats`).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..models.gns import HISTORY, GNSConfig, LearnedSimulator
from ..train import config as flags
from ..train.checkpoint import Checkpoint, RunDirectory, atomic_write, load_checkpoint, load_model, open_run
from ..train.distributed import distributed, shard
from ..train.engine import LRSchedule, TrainConfig, fit, seed_everything
from .formats import FORMATS, open_dataset
from .metrics import one_step_errors, rollout_errors
from .particles import convert_gns
from .render import render
from .windows import TrajectoryWindows

__all__ = ["SimulateConfig", "train", "load_simulator", "evaluate", "render", "register"]

TASK = "simulate"
SMALL_MODEL_BUDGET = 30 * 60  # seconds: CPU budgets up to this train the smaller model by default


@dataclasses.dataclass(frozen=True)
class SimulateConfig:
    """The simulator's size, its training noise, and the engine's settings.

    Attributes:
        latent_size: width of the latent node and edge states and of every MLP; none: chosen from the budget (64 when max_seconds is 30 minutes or less on a CPU, else the paper's 128).
        message_passing_steps: interaction networks in the processor (weights not shared); none: from the budget (5 when max_seconds is 30 minutes or less on a CPU, else the paper's 10).
        noise_std: random-walk noise on the last input position, in the data's units (the paper's 6.7e-4 is half of WaterDrop's vel_std); none: relative_noise times the data's vel_std.
        relative_noise: the noise as a multiple of the data's mean per-frame velocity spread (vel_std), unless noise_std is given.
        pushforward_steps: at most this many steps of the model's own before a training step (0: off).
        pushforward_probability: the share of training steps that begin with such steps.
        connectivity_radius: the neighbour graph's radius (none: the dataset's default_connectivity_radius).
        train: the engine's settings; batch_size counts windows (whole scenes) per step.
    """

    latent_size: int | None = None
    message_passing_steps: int | None = None
    noise_std: float | None = None
    relative_noise: float = 0.3
    pushforward_steps: int = 0
    pushforward_probability: float = 0.2
    connectivity_radius: float | None = None
    # Exponential decay from lr to lr / 100 over the steps, or over the clock when the
    # time budget ends the run first.
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=20000,
            batch_size=2,
            lr=1e-3,
            schedule=LRSchedule.EXPONENTIAL,
            min_lr_ratio=1e-2,
            lr_by_clock=True,
            clip_grad_norm=1.0,
            eval_every=1000,
            log_every=50,
        )
    )

    def for_budget(self) -> SimulateConfig:
        """This config with the model's size filled in where it was left to the budget.

        Measured on 2 CPU cores (``benchmarks/gns_budget.py``, issue 15): within minutes the
        paper's latent 128 and 10 rounds take about a sixth as many steps as latent 64 and 5
        rounds, and end further from the data; latent 32 takes more steps but learns less.
        A run without a time limit, or with more than 30 minutes or a GPU, gets the paper's size.
        """
        small = self.train.max_seconds is not None and self.train.max_seconds <= SMALL_MODEL_BUDGET
        small = small and torch.device(self.train.device).type == "cpu"
        latent, rounds = (64, 5) if small else (128, 10)
        return dataclasses.replace(
            self,
            latent_size=latent if self.latent_size is None else self.latent_size,
            message_passing_steps=rounds if self.message_passing_steps is None else self.message_passing_steps,
        )

    @property
    def gns(self) -> GNSConfig:
        if self.latent_size is None or self.message_passing_steps is None:
            return self.for_budget().gns
        return GNSConfig(
            latent_size=self.latent_size,
            message_passing_steps=self.message_passing_steps,
            connectivity_radius=self.connectivity_radius,
        )


def _noise_std(config: SimulateConfig, metadata: Any) -> float:
    """The noise's standard deviation: ``noise_std`` if given, else ``relative_noise`` times
    the data's mean per-frame velocity spread (``vel_std``).

    A fixed 6.7e-4 suits WaterDrop's units (half its vel_std), not every dataset's: on
    LagrangeBench's TGV it is a tenth of the velocity spread. Measured there
    (``benchmarks/gns_budget.py``), 0.3 of the spread beat 0.015, 0.03 and 0.1 on MSE5 and MSE20.
    """
    if config.noise_std is not None:
        return config.noise_std
    return config.relative_noise * float(np.mean(metadata.vel_std))


def _noisy_loss(noise_std: float, model: LearnedSimulator, pushforward: int = 0, probability: float = 0.0):
    """The training loss: MSE of the normalised acceleration from a noisy history.

    With ``pushforward`` (LagrangeBench's pushforward trick, Brandstetter et al. 2022), a
    batch is, with ``probability``, first stepped ``1 .. pushforward`` times by the model
    itself without gradients, and the loss taken on the next step from there against the
    true frame: the model learns to steer its own drift back, as in a rollout.
    """
    velocity_noise = noise_std / math.sqrt(HISTORY)

    def loss_fn(net: torch.nn.Module, batch: Any) -> torch.Tensor:
        history = batch.history
        # Random-walk noise: velocity noise accumulated over the history, the first
        # position unperturbed; the target moves with the last position's noise, so the
        # model learns to undo the velocity error it was fed.
        noise = torch.randn(history.shape[0], HISTORY, history.shape[2], device=history.device) * velocity_noise
        noise = torch.cat([torch.zeros_like(noise[:, :1]), noise.cumsum(1)], 1)  # [N, 6, D]
        noisy = history + noise
        unrolls = 0
        if pushforward and float(torch.rand(())) < probability:
            unrolls = int(torch.randint(1, pushforward + 1, ()))
        if unrolls:
            with torch.no_grad():
                for _ in range(unrolls):
                    stepped = model.step(noisy, batch.particle_type, batch.batch)
                    noisy = torch.cat([noisy[:, 1:], stepped.unsqueeze(1)], 1)
            target_acc = model.target_acceleration(noisy, batch.future[:, unrolls - 1])
        else:
            target_acc = model.target_acceleration(noisy, batch.target + noise[:, -1])
        prediction = net(noisy, batch.particle_type, batch.batch)
        return F.mse_loss(prediction, (target_acc - model.acc_mean) / model.acc_std)

    return loss_fn


def _check_resumable(resume: Path, gns: GNSConfig) -> None:
    """A clear error when the run to resume has another architecture than the one asked for."""
    model_file = Path(resume) / "model.pt" if Path(resume).is_dir() else Path(resume).with_name("model.pt")
    if model_file.is_file():
        trained = load_checkpoint(model_file, task=TASK).model_config
        if trained != flags.to_dict(gns):
            raise ValueError(f"{model_file} was trained with {trained}, not {flags.to_dict(gns)}")


def train(config: SimulateConfig, data: Path, out: Path, data_format: str = "auto") -> dict[str, Any]:
    """Trains on ``data/train.npz``, keeps the weights best on ``data/valid.npz``; writes the run to ``out``.

    ``data_format`` is one of :data:`.formats.FORMATS` (``.h5``, ``.tfrecord`` split files for
    LagrangeBench and DeepMind); a periodic dataset's axes wrap (minimum-image displacements,
    neighbours across the faces).

    Under ``torchrun`` each process draws its share of the windows and the engine's
    DistributedDataParallel averages the gradients (gloo on CPU, NCCL on GPU); rank 0
    writes. Returns ``metrics.json``'s contents and ``timing.json``'s.
    """
    RunDirectory.check_target(out)
    config = config.for_budget()
    settings = config.train
    with distributed(settings.device) as here:
        if here.world_size > 1 and settings.device == "cuda":  # one GPU per process
            settings = dataclasses.replace(settings, device=f"cuda:{os.environ.get('LOCAL_RANK', here.rank)}")
            torch.cuda.set_device(settings.device)
        device = torch.device(settings.device)
        dataset, kinds = open_dataset(data, data_format), config.gns.particle_types
        metadata = dataset.metadata
        train_set = dataset.read("train", particle_types=kinds)
        windows = TrajectoryWindows(train_set, device=device, future=config.pushforward_steps)
        valid_set = dataset.read("valid", particle_types=kinds) if dataset.has("valid") else None
        held_out = TrajectoryWindows(valid_set, every=5, device=device) if valid_set is not None else None
        if settings.resume is not None:
            _check_resumable(settings.resume, config.gns)
        seed_everything(settings.seed)
        model = LearnedSimulator(metadata, config.gns).to(device)
        run = RunDirectory.start(out, task=TASK) if here.main else None

        def batches(epoch: int):
            for chosen in shard(len(windows), epoch, settings.seed).split(settings.batch_size):
                yield windows.batch(chosen)

        def validate(simulator: LearnedSimulator) -> dict[str, float]:
            errors = one_step_errors(simulator, held_out)
            return {"val_loss": errors["loss"], "val_one_step_mse": errors["one_step_mse"]}

        result = fit(
            model,
            _noisy_loss(_noise_std(config, metadata), model, config.pushforward_steps, config.pushforward_probability),
            batches,
            settings,
            validate=validate if held_out is not None else None,
            steps_per_epoch=math.ceil(math.ceil(len(windows) / here.world_size) / settings.batch_size),
            run_dir=out,
            description="simulate",
        )
        metrics = {"steps": result.steps, "epochs": result.epochs, "stop": result.stop.value}
        metrics |= {"processes": here.world_size, "best": result.best, "history": result.history}
        timing = {**result.timing(), "seconds": result.seconds}
        if run is not None:
            run.save_model(result.model, task_config=config, extra={"metadata": metadata.to_json()})
            run.write_json("metrics.json", metrics)
            run.write_json("timing.json", {**timing, "processes": here.world_size})
            run.finish()
    return {**metrics, **timing}


def load_simulator(run: str | Path, device: str | torch.device = "cpu") -> tuple[LearnedSimulator, Checkpoint]:
    """The simulator of a finished ``train`` run, in eval mode on ``device``, and its checkpoint.

    The dataset's metadata travels as plain data in the checkpoint's ``extra``, from which
    ``LearnedSimulator.from_checkpoint`` rebuilds it through the one ``load_model``.
    """
    return load_model(open_run(run, task=TASK), task=TASK, map_location=device)


def _save_rollout(path: Path, truth: np.ndarray, predicted: np.ndarray, bounds: list) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, truth=truth, predicted=predicted, bounds=np.array(bounds))
    atomic_write(path, buffer.getvalue())


def evaluate(
    run: Path, data: Path, split: str, out: Path, max_trajectories: int | None = None, device: str = "cpu",
    data_format: str = "auto", *, sinkhorn: bool = True, save_rollouts: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One-step and rollout MSE of the model and of constant velocity, and LagrangeBench's
    rollout figures for both (:func:`.metrics.rollout_metrics`: MSE over the first 5 and 20
    frames, kinetic-energy error, Sinkhorn divergence unless ``sinkhorn`` is False); writes
    ``out/metrics.json``, ``out/timing.json`` and ``out/rollout.npz`` (the first trajectory,
    for :func:`render`), and with ``save_rollouts`` ``out/rollouts.npz``: ``predicted_K`` and
    ``truth_K`` ``[T - 6, N, D]`` for every trajectory ``K``, the predicted frames only."""
    out = RunDirectory.check_target(out)
    if max_trajectories is not None and max_trajectories < 1:
        raise ValueError(f"--max-trajectories {max_trajectories} must be at least 1")
    model, _ = load_simulator(run, device)
    dataset = open_dataset(data, data_format)
    metadata, trajectories = dataset.metadata, dataset.read(split, particle_types=model.config.particle_types)
    trajectories = trajectories[:max_trajectories]
    one_step = one_step_errors(model, TrajectoryWindows(trajectories, every=5, device=device))  # every 5th window
    rolled: list = []
    rollout, (truth, predicted) = rollout_errors(
        model, trajectories, device, lagrangebench=True, sinkhorn=sinkhorn, keep=rolled
    )
    metrics = {
        "split": split,
        "trajectories": len(trajectories),
        "one_step_mse": one_step["one_step_mse"],
        "rollout_mse": rollout["rollout_mse"],
        "baseline_one_step_mse": one_step["baseline_one_step_mse"],
        "baseline_rollout_mse": rollout["baseline_rollout_mse"],
        "rollout_ratio_to_baseline": rollout["rollout_mse"] / rollout["baseline_rollout_mse"],
        **{k: v for k, v in rollout.items() if k not in ("rollout_mse", "baseline_rollout_mse")},
    }
    # The rollouts alone are timed, not the figures computed from them.
    steps = sum(rolled_out.shape[0] for _, rolled_out, _ in rolled)
    timing = {"rollout_steps_per_second": steps / sum(seconds for _, _, seconds in rolled)}
    if save_rollouts:
        arrays = {}
        for k, (position, rolled_out, _) in enumerate(rolled):
            arrays[f"predicted_{k}"] = rolled_out.cpu().numpy()
            arrays[f"truth_{k}"] = position[HISTORY + 1 :].cpu().numpy()
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write(out / "rollouts.npz", buffer.getvalue())
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write(out / "timing.json", json.dumps(timing, indent=2) + "\n")
    _save_rollout(out / "rollout.npz", truth, predicted, metadata.bounds)
    return {**metrics, **timing}


_SAME_AS_OUT = Path("--out")  # `--resume` given without a directory


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "simulate", aliases=["physics"], help="learned particle simulation (GNS) on SPH ground truth"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="simulate an SPH dataset (metadata.json, train/valid/test.npz)")
    gen.add_argument("--out", required=True, type=Path, help="dataset directory to write (required)")
    gen.add_argument("--frames", type=int, default=200, help="frames per trajectory (default: 200)")
    for split, count in (("train", 8), ("valid", 2), ("test", 2)):
        gen.add_argument(f"--{split}", type=int, default=count, help=f"{split} trajectories (default: {count})")
    gen.add_argument("--seed", type=int, default=0, help="seed of the scenes' random blocks of fluid (default: 0)")
    _scene(gen, default="drop")
    gen.set_defaults(func=_generate_cli)
    tr = actions.add_parser("train", help="train the learned simulator on a dataset")
    tr.add_argument("--data", required=True, type=Path, help="dataset directory from `generate` (required)")
    _format(tr)
    tr.add_argument("--out", required=True, type=Path, help="run directory to write (required)")
    flags.add_arguments(tr, SimulateConfig, exclude=("resume", "min_lr_ratio"))
    tr.add_argument("--final-lr", type=float, default=1e-5, help="learning rate the decay ends at (default: 1e-05)")
    tr.add_argument(
        "--resume", nargs="?", const=_SAME_AS_OUT, type=Path, metavar="RUN",
        help="continue from RUN's train_state.pt (from --out when RUN is left out) up to --steps (default: none)",
    )  # fmt: skip
    tr.set_defaults(func=_train_cli)
    ev = actions.add_parser("evaluate", help="one-step and rollout MSE against constant velocity")
    _model_and_data(ev)
    ev.add_argument("--out", required=True, type=Path, help="directory for metrics.json and rollout.npz (required)")
    ev.add_argument("--max-trajectories", type=int, help="evaluate only the first N trajectories (default: all)")
    ev.add_argument(
        "--sinkhorn", action=argparse.BooleanOptionalAction, default=True,
        help="compute the Sinkhorn divergence of every 10th frame, the slowest figure (default: on)",
    )  # fmt: skip
    ev.add_argument(
        "--save-rollouts", action="store_true",
        help="also write OUT/rollouts.npz: predicted_K and truth_K per trajectory, to score elsewhere (default: off)",
    )  # fmt: skip
    ev.set_defaults(func=_evaluate_cli)
    ro = actions.add_parser("rollout", help="roll one trajectory out and save truth and prediction as npz")
    _model_and_data(ro)
    ro.add_argument("--trajectory", type=int, default=0, help="index within the split (default: 0)")
    ro.add_argument("--out", required=True, type=Path, help="npz file to write (required)")
    ro.set_defaults(func=_rollout_cli)
    re = actions.add_parser("render", help="a side-by-side GIF from evaluate's rollout.npz")
    re.add_argument("--rollout", required=True, type=Path, help="rollout.npz from evaluate or rollout (required)")
    re.add_argument("--out", required=True, type=Path, help="GIF file to write (required)")
    re.add_argument("--every", type=int, default=4, help="draw every N-th frame (default: 4)")
    re.set_defaults(func=lambda args: print(f"wrote {render(args.rollout, args.out, args.every)}") or 0)
    demo = actions.add_parser("demo", help="generate, train a few minutes, evaluate, render: the physics rollout demo")
    demo.add_argument("--out", required=True, type=Path, help="directory for data/, model/ and the results (required)")
    _scene(demo, default="dam_break")
    demo.add_argument("--minutes", type=float, default=4.0, help="training time in minutes (default: 4.0)")
    demo.add_argument("--max-seconds", type=float, help="training time in seconds; overrides --minutes (default: none)")
    demo.add_argument("--device", default="cpu", help="torch device to train and evaluate on (default: cpu)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the initialisation and data order (default: 0)")
    demo.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: on)"
    )
    demo.set_defaults(func=_demo_cli)
    co = actions.add_parser(
        "convert", help="rewrite a PyTorch GNS dataset in structnets' layout; unpickles SRC: trusted input only",
        description="Converts a PyTorch GNS dataset folder (metadata.json and *.npz) or one .npz into structnets' "
        "plain-array layout, checked, for `train --data DST`. Converting unpickles SRC, which can run code "
        "from it: only convert files you trust.",
    )  # fmt: skip
    co.add_argument("src", metavar="SRC", type=Path, help="GNS dataset folder or .npz file; trusted (required)")
    co.add_argument("dst", metavar="DST", type=Path, help="folder (or .npz file) to write; not overwritten (required)")
    co.set_defaults(func=_convert_cli)
    return parser


def _model_and_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="run directory from `train` (required)")
    parser.add_argument("--data", required=True, type=Path, help="dataset directory (required)")
    _format(parser)
    parser.add_argument("--split", default="test", help="the split, DATA/SPLIT.npz, .h5 or .tfrecord (default: test)")
    parser.add_argument("--device", default="cpu", help="torch device to run the model on (default: cpu)")


def _scene(parser: argparse.ArgumentParser, default: str) -> None:
    from .sph import Scene

    parser.add_argument(
        "--scene", choices=[s.value for s in Scene], default=default,
        help="drop: a random block of water falls into the box (2D: up to 300 particles); dam_break: a column of "
        f"water against a wall collapses (2D: 1,000-1,700 particles) (default: {default})",
    )  # fmt: skip
    parser.add_argument("--dim", type=int, choices=(2, 3), default=2, help="2D or 3D (default: 2)")


def _format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=FORMATS, default="auto", dest="data_format",
        help="layout of --data: structnets (SPLIT.npz), lagrangebench (SPLIT.h5, LagrangeBench's HDF5), tfrecord "
        "(SPLIT.tfrecord, DeepMind's learning_to_simulate), each beside metadata.json; auto tells them by the "
        "file names (default: auto)",
    )  # fmt: skip


def _generate_cli(args: argparse.Namespace) -> int:
    from .sph import generate_dataset

    counts = {"train": args.train, "valid": args.valid, "test": args.test}
    generate_dataset(args.out, trajectories=counts, frames=args.frames, seed=args.seed, scene=args.scene, dim=args.dim)
    print(f"wrote {args.out}/metadata.json, train.npz, valid.npz, test.npz")
    return 0


def _train_cli(args: argparse.Namespace) -> int:
    engine = flags.from_args(TrainConfig, args, resume=args.out if args.resume is _SAME_AS_OUT else args.resume)
    if not 0 <= args.final_lr <= engine.lr:
        raise ValueError(f"--final-lr {args.final_lr} must lie between 0 and --lr {engine.lr}")
    engine = dataclasses.replace(engine, min_lr_ratio=args.final_lr / engine.lr)
    metrics = train(flags.from_args(SimulateConfig, args, train=engine), args.data, args.out, args.data_format)
    print(f"{metrics['steps']} steps in {metrics['seconds']:.0f} s; wrote {args.out}/model.pt")
    return 0


def _rollout_cli(args: argparse.Namespace) -> int:
    model, _ = load_simulator(args.model, args.device)
    dataset = open_dataset(args.data, args.data_format)
    metadata, trajectories = dataset.metadata, dataset.read(args.split, particle_types=model.config.particle_types)
    if not 0 <= args.trajectory < len(trajectories):
        raise ValueError(f"--trajectory {args.trajectory}: the {args.split} split has {len(trajectories)} trajectories")
    metrics, (truth, predicted) = rollout_errors(model, [trajectories[args.trajectory]], args.device)
    _save_rollout(args.out, truth, predicted, metadata.bounds)
    print(f"rollout MSE {metrics['rollout_mse']:.3g}; wrote {args.out} (render it with structnets simulate render)")
    return 0


def _print(metrics: dict) -> None:
    print(
        f"one-step MSE {metrics['one_step_mse']:.3g} (constant velocity {metrics['baseline_one_step_mse']:.3g}); "
        f"rollout MSE {metrics['rollout_mse']:.3g} (constant velocity {metrics['baseline_rollout_mse']:.3g}, "
        f"ratio {metrics['rollout_ratio_to_baseline']:.3f})"
    )
    shown = [name for name in ("rollout_mse5", "rollout_mse20", "e_kin", "sinkhorn") if name in metrics]
    if shown:
        print(
            "LagrangeBench's figures: "
            + ", ".join(f"{n} {metrics[n]:.3g} (constant velocity {metrics['baseline_' + n]:.3g})" for n in shown)
        )


def _evaluate_cli(args: argparse.Namespace) -> int:
    _print(
        evaluate(
            args.model, args.data, args.split, args.out, args.max_trajectories, args.device, args.data_format,
            sinkhorn=args.sinkhorn, save_rollouts=args.save_rollouts,
        )
    )  # fmt: skip
    print(f"wrote {args.out}/metrics.json, rollout.npz")
    return 0


def _convert_cli(args: argparse.Namespace) -> int:
    for path, count in convert_gns(args.src, args.dst).items():
        print(f"wrote {path}" + (f" ({count} trajectories)" if path.suffix == ".npz" else ""))
    return 0


def _demo_cli(args: argparse.Namespace) -> int:
    from .render import render_stills
    from .sph import generate_dataset

    out = RunDirectory.check_target(args.out)
    data = out / "data"
    if not (data / "metadata.json").is_file():
        print(f"generating SPH trajectories ({args.dim}D {args.scene}: 8 train, 2 valid, 2 test, 200 frames) ...")
        generate_dataset(data, frames=200, seed=0, scene=args.scene, dim=args.dim)
    seconds = args.max_seconds if args.max_seconds is not None else args.minutes * 60
    engine = dataclasses.replace(
        SimulateConfig().train, steps=100000, max_seconds=seconds, device=args.device, seed=args.seed,
        progress=args.progress,
    )  # fmt: skip
    train(SimulateConfig(latent_size=64, message_passing_steps=5, train=engine), data, out / "model")
    metrics = evaluate(out / "model", data, "test", out, device=args.device)
    _print(metrics)
    render(out / "rollout.npz", out / "rollout.gif")
    render_stills(out / "rollout.npz", out / "rollout.png", frames=4)
    print(f"wrote {out}/metrics.json, rollout.gif, rollout.png")
    return 0
