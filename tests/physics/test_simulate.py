import argparse
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from structnets.models.gns import GNSConfig, LearnedSimulator
from structnets.physics.particles import Trajectory, read_metadata, read_trajectories, write_trajectories
from structnets.physics.simulate import SimulateConfig, evaluate, load_simulator, render, train
from structnets.train.checkpoint import CheckpointError, RunDirectory, checkpoint_bytes, load_checkpoint


@pytest.fixture
def ballistic(tmp_path):
    """Particles under constant gravity, no walls reached: the exact answer is a constant acceleration."""
    rng = np.random.default_rng(0)
    frames, dt = 30, 0.0025
    times = np.arange(frames)[:, None, None] * dt
    trajectories = []
    for k in range(3):
        start = rng.uniform(0.4, 0.6, (20, 2))
        velocity = rng.normal(0, 0.2, (20, 2))
        position = start + velocity * times + 0.5 * np.array([0.0, -9.81]) * times**2
        trajectories.append(Trajectory(f"t{k}", position.astype(np.float32), np.full(20, 5)))
    for split in ("train", "valid", "test"):
        write_trajectories(tmp_path / f"{split}.npz", trajectories)
    steps = np.concatenate([np.diff(t.position, axis=0).reshape(-1, 2) for t in trajectories])
    accelerations = np.concatenate([np.diff(t.position, n=2, axis=0).reshape(-1, 2) for t in trajectories])
    metadata = {
        "bounds": [[0.1, 0.9], [0.1, 0.9]],
        "dt": dt,
        "sequence_length": frames - 1,
        "default_connectivity_radius": 0.05,
        "dim": 2,
        "vel_mean": steps.mean(0).tolist(),
        "vel_std": steps.std(0).tolist(),
        "acc_mean": accelerations.mean(0).tolist(),
        "acc_std": (accelerations.std(0) + 1e-9).tolist(),
    }
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    return tmp_path


def _config(steps: int, **engine) -> SimulateConfig:
    defaults = SimulateConfig()
    train_config = dataclasses.replace(defaults.train, steps=steps, progress=False, **engine)
    return SimulateConfig(latent_size=16, message_passing_steps=2, train=train_config)


def test_step_and_rollout_shapes(ballistic):
    model = LearnedSimulator(read_metadata(ballistic), GNSConfig(latent_size=16, message_passing_steps=2))
    history = torch.rand(7, 6, 2) * 0.2 + 0.4
    kinds = torch.full((7,), 5)
    assert model(history, kinds).shape == (7, 2) and model.step(history, kinds).shape == (7, 2)
    assert model.rollout(history.transpose(0, 1), kinds, 4).shape == (4, 7, 2)


def test_defaults_are_todays():
    engine = SimulateConfig().train
    assert (SimulateConfig().latent_size, SimulateConfig().message_passing_steps) == (None, None)  # the budget's
    assert SimulateConfig().gns.latent_size == 128 and SimulateConfig().gns.message_passing_steps == 10
    assert (engine.steps, engine.batch_size, engine.lr) == (20000, 2, 1e-3)
    assert engine.lr * engine.min_lr_ratio == pytest.approx(1e-5)
    assert engine.schedule.value == "exponential" and engine.lr_by_clock and engine.clip_grad_norm == 1.0


def test_training_beats_constant_velocity_and_writes_everything(ballistic, tmp_path, one_thread):
    config = dataclasses.replace(_config(300, lr=3e-3), latent_size=32, noise_std=0.0)
    metrics = train(config, ballistic, tmp_path / "run")
    losses = [h["train_loss"] for h in metrics["history"] if "train_loss" in h]
    assert metrics["steps"] == 300 and losses[-1] < losses[0]
    assert metrics["best"]["step"] == 300 and metrics["best"]["val_one_step_mse"] > 0  # validated at the end
    result = evaluate(tmp_path / "run", ballistic, "test", tmp_path / "eval")
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(on_disk) >= {"one_step_mse", "rollout_mse", "baseline_one_step_mse", "baseline_rollout_mse"}
    assert "rollout_steps_per_second" not in on_disk and result["rollout_steps_per_second"] > 0
    # Gravity is all there is to learn; constant velocity misses it quadratically in time.
    assert result["rollout_mse"] < 0.3 * result["baseline_rollout_mse"]
    assert result["one_step_mse"] < 0.3 * result["baseline_one_step_mse"]
    checkpoint = load_checkpoint(tmp_path / "run", task="simulate")
    assert checkpoint.model_config["latent_size"] == 32 and checkpoint.task_config["train"]["steps"] == 300
    model, _ = load_simulator(tmp_path / "run")
    assert model.radius == 0.05 and not model.training
    gif = render(tmp_path / "eval" / "rollout.npz", tmp_path / "rollout.gif", every=8)
    assert gif.stat().st_size > 1000


def test_simulate_command_line(tmp_path, capsys, one_thread):
    from structnets.cli import main

    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    assert (
        main(["simulate", "generate", "--out", data, "--frames", "20", "--train", "1", "--valid", "1", "--test", "1"])
        == 0
    )
    small = ["--latent-size", "16", "--message-passing-steps", "2", "--steps", "5", "--no-progress"]
    assert main(["simulate", "train", "--data", data, "--out", run, *small, "--final-lr", "1e-4"]) == 0
    assert load_checkpoint(run).task_config["train"]["min_lr_ratio"] == pytest.approx(0.1)
    ev = ["simulate", "evaluate", "--model", run, "--data", data, "--out", str(tmp_path / "ev"), "--save-rollouts"]
    assert main(ev) == 0
    printed = capsys.readouterr().out
    assert "rollout MSE" in printed and "LagrangeBench's figures: rollout_mse5" in printed and "sinkhorn" in printed
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for name in ("rollout_mse5", "e_kin", "sinkhorn"):
        assert np.isfinite(metrics[name]) and np.isfinite(metrics["baseline_" + name])
    with np.load(tmp_path / "ev" / "rollouts.npz") as saved:
        assert sorted(saved.files) == ["predicted_0", "truth_0"]
        assert saved["predicted_0"].shape == saved["truth_0"].shape and saved["truth_0"].shape[0] == 20 - 6
    gif = str(tmp_path / "r.gif")
    assert main(["simulate", "render", "--rollout", str(tmp_path / "ev" / "rollout.npz"), "--out", gif]) == 0
    one = str(tmp_path / "one.npz")
    assert main(["simulate", "rollout", "--model", run, "--data", data, "--trajectory", "0", "--out", one]) == 0
    assert main(["simulate", "rollout", "--model", run, "--data", data, "--trajectory", "5", "--out", one]) == 2
    assert "the test split has 1 trajectories" in capsys.readouterr().err
    (tmp_path / "data" / "metadata.json").write_text("{}")
    assert main(["simulate", "evaluate", "--model", run, "--data", data, "--out", str(tmp_path / "ev2")]) == 2
    assert "missing field(s) bounds" in capsys.readouterr().err


def test_every_flag_has_help_and_its_default():
    from structnets.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices["simulate"]._subparsers._group_actions[0]
    for name, parser in commands.choices.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and ("default:" in action.help or "required" in action.help), (name, action.dest)
    train_flags = {flag for action in commands.choices["train"]._actions for flag in action.option_strings}
    common = {"--out", "--steps", "--max-seconds", "--device", "--seed", "--resume", "--no-progress", "--batch-size"}
    assert common | {"--lr", "--final-lr", "--noise-std", "--ema-decay", "--max-train-seconds"} <= train_flags
    assert {"--minutes", "--max-seconds", "--no-progress"} <= {
        flag for action in commands.choices["demo"]._actions for flag in action.option_strings
    }


def test_resume_continues_from_the_checkpoint(ballistic, tmp_path, one_thread):
    from structnets.cli import main

    config = _config(5)
    train(config, ballistic, tmp_path / "run")
    first = load_checkpoint(tmp_path / "run")
    resumed = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=8, resume=tmp_path / "run"))
    metrics = train(resumed, ballistic, tmp_path / "run")
    again = load_checkpoint(tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 8 and on_disk["steps"] == 8
    assert [h["step"] for h in on_disk["history"] if "val_loss" in h] == [5, 8]  # the first run's history goes on
    assert not torch.equal(first.state_dict["decoder.0.weight"], again.state_dict["decoder.0.weight"])
    wider = dataclasses.replace(resumed, latent_size=8, train=dataclasses.replace(resumed.train, steps=9))
    with pytest.raises(ValueError, match="was trained with"):
        train(wider, ballistic, tmp_path / "run")
    # On the command line a bare --resume continues the --out run, as it always did.
    small = ["--latent-size", "16", "--message-passing-steps", "2", "--no-progress"]
    args = ["simulate", "train", "--data", str(ballistic), "--out", str(tmp_path / "run"), *small]
    assert main([*args, "--steps", "10", "--resume"]) == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history if "val_loss" in h] == [5, 8, 10]


def test_same_seed_gives_identical_metrics(ballistic, tmp_path, one_thread):
    for name in ("a", "b"):
        train(_config(6, eval_every=3), ballistic, tmp_path / name)
        evaluate(tmp_path / name, ballistic, "test", tmp_path / f"eval-{name}", max_trajectories=1)
    for name in ("metrics.json", "model.pt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "eval-a" / "metrics.json").read_bytes() == (tmp_path / "eval-b" / "metrics.json").read_bytes()
    train(dataclasses.replace(_config(6, eval_every=3, seed=1)), ballistic, tmp_path / "c")
    assert (tmp_path / "c" / "metrics.json").read_bytes() != (tmp_path / "a" / "metrics.json").read_bytes()


def test_ema_weights_are_what_is_validated_and_kept(ballistic, tmp_path, one_thread):
    plain = train(_config(6), ballistic, tmp_path / "plain")
    averaged = train(_config(6, ema_decay=0.5), ballistic, tmp_path / "ema")
    assert [h["train_loss"] for h in averaged["history"] if "train_loss" in h] == [
        h["train_loss"] for h in plain["history"] if "train_loss" in h
    ]  # the same steps, then another set of weights kept
    assert averaged["best"]["val_loss"] != plain["best"]["val_loss"]
    ema, _ = load_simulator(tmp_path / "ema")
    last, _ = load_simulator(tmp_path / "plain")
    assert not torch.equal(ema.decoder[0].weight, last.decoder[0].weight)


def test_evaluate_refuses_an_unfinished_run_and_another_tasks_checkpoint(ballistic, tmp_path, capsys):
    from structnets.cli import main

    def evaluate_cli(run) -> str:
        assert (
            main(["simulate", "evaluate", "--model", str(run), "--data", str(ballistic), "--out", str(tmp_path)]) == 2
        )
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1 and str(run) in message
        return message

    RunDirectory.start(tmp_path / "unfinished", task="simulate")
    assert "incomplete" in evaluate_cli(tmp_path / "unfinished")
    other = RunDirectory.start(tmp_path / "other", task="molprop")
    other.finish()
    assert "a run of task 'molprop'" in evaluate_cli(tmp_path / "other")
    # A run that says simulate but holds another task's checkpoint.
    model = LearnedSimulator(read_metadata(ballistic), GNSConfig(latent_size=8, message_passing_steps=1))
    swapped = RunDirectory.start(tmp_path / "swapped", task="simulate")
    swapped.write_bytes("model.pt", checkpoint_bytes(model, task="molprop"))
    swapped.finish()
    assert "a checkpoint of task 'molprop'" in evaluate_cli(tmp_path / "swapped")
    # The simulator's checkpoint without its metadata cannot be rebuilt: one line naming the file.
    bare = RunDirectory.start(tmp_path / "bare", task="simulate")
    bare.save_model(model)
    bare.finish()
    with pytest.raises(CheckpointError, match="model.pt: not a LearnedSimulator this version can load"):
        load_simulator(tmp_path / "bare")


def test_demo_runs_with_a_tiny_budget(tmp_path, monkeypatch, capsys, one_thread):
    from structnets.cli import main
    from structnets.physics import sph

    real, asked = sph.generate_dataset, []

    def small(out, **kwargs):  # the demo's dataset, shortened
        asked.append((kwargs["scene"], kwargs["dim"]))
        counts = {"train": 1, "valid": 1, "test": 1}
        return real(out, trajectories=counts, frames=12, max_particles=60, seed=0, dim=kwargs["dim"])

    monkeypatch.setattr(sph, "generate_dataset", small)
    assert main(["simulate", "demo", "--out", str(tmp_path / "demo"), "--max-seconds", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "rollout MSE" in printed and "sinkhorn" in printed
    assert {"metrics.json", "timing.json", "rollout.npz", "rollout.gif", "rollout.png"} <= {
        p.name for p in (tmp_path / "demo").iterdir()
    }
    assert json.loads((tmp_path / "demo" / "model" / "metrics.json").read_text())["stop"] in ("time", "done")
    # The 3D demo: the same commands on 3D SPH.
    args = ["--out", str(tmp_path / "demo3"), "--dim", "3", "--scene", "drop", "--max-seconds", "1", "--no-progress"]
    assert main(["simulate", "demo", *args]) == 0
    assert asked == [("dam_break", 2), ("drop", 3)]
    with np.load(tmp_path / "demo3" / "rollout.npz") as rollout:
        assert rollout["truth"].shape[2] == 3 and rollout["predicted"].shape == rollout["truth"].shape


def test_distributed_training_with_gloo(ballistic, tmp_path):
    """Two processes under torchrun train one simulator (DistributedDataParallel, gloo)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
        "-m", "structnets", "simulate", "train", "--data", str(ballistic), "--out", str(tmp_path / "ddp"),
        "--latent-size", "16", "--message-passing-steps", "2", "--steps", "4", "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 4


def _gns_entry(trajectory: Trajectory) -> np.ndarray:
    entry = np.empty(2, dtype=object)  # the PyTorch GNS layout: (positions, particle_type) as Python objects
    entry[0], entry[1] = trajectory.position.astype(np.float64), trajectory.particle_type
    return entry


def test_convert_command_makes_gns_layout_trainable(ballistic, tmp_path, capsys, one_thread):
    from structnets.cli import build_parser, main

    gns = tmp_path / "gns"
    gns.mkdir()
    shutil.copy(ballistic / "metadata.json", gns / "metadata.json")
    for split in ("train", "valid"):
        trajectories = read_trajectories(ballistic / f"{split}.npz")
        np.savez(gns / f"{split}.npz", **{t.name: _gns_entry(t) for t in trajectories})
    small = ["--latent-size", "16", "--message-passing-steps", "2", "--steps", "2", "--no-progress"]
    # The pickled files are refused, with the command that converts them.
    assert main(["simulate", "train", "--data", str(gns), "--out", str(tmp_path / "refused"), *small]) == 2
    error = capsys.readouterr().err
    assert "train.npz holds arrays of Python objects ('t0', 't1', 't2'), as the pickled PyTorch GNS layout" in error
    assert "structnets simulate convert" in error and not (tmp_path / "refused").exists()
    data = tmp_path / "data"
    assert main(["physics", "convert", str(gns), str(data)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {data / 'train.npz'} (3 trajectories)" in out and f"wrote {data / 'metadata.json'}" in out
    assert main(["simulate", "train", "--data", str(data), "--out", str(tmp_path / "run"), *small]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
    # Nothing is overwritten, and the help says the input must be trusted.
    assert main(["simulate", "convert", str(gns), str(data)]) == 2
    assert "convert writes new files and overwrites none" in capsys.readouterr().err
    commands = build_parser()._subparsers._group_actions[0].choices["simulate"]._subparsers._group_actions[0]
    text = " ".join(commands.choices["convert"].format_help().split())
    assert "unpickles SRC, which can run code from it: only convert files you trust" in text


def test_particle_types_beyond_the_embedding_are_refused_before_training(ballistic, tmp_path, capsys):
    from structnets.cli import main

    rng = np.random.default_rng(1)
    kinds = np.full(20, 5)
    kinds[7] = GNSConfig().particle_types  # one past the embedding's last row
    position = rng.uniform(0.4, 0.6, (10, 20, 2)).astype(np.float32)
    write_trajectories(ballistic / "train.npz", [Trajectory("t0", position, kinds)])
    args = ["simulate", "train", "--data", str(ballistic), "--out", str(tmp_path / "run"), "--steps", "1"]
    assert main([*args, "--no-progress"]) == 2
    assert (
        "train.npz, trajectory 't0': particle_type 9 of particle 7 is out of range 0 to 8 "
        "(the simulator has 9 particle types)" in capsys.readouterr().err
    )
    evaluate_args = ["simulate", "evaluate", "--model", str(tmp_path), "--data", str(ballistic), "--out", str(tmp_path)]
    assert main([*evaluate_args, "--max-trajectories", "0"]) == 2
    assert "--max-trajectories 0 must be at least 1" in capsys.readouterr().err


def test_pushforward_steps_the_model_first_and_scores_the_next_true_frame(ballistic):
    from structnets.physics.simulate import _noise_std, _noisy_loss
    from structnets.physics.windows import TrajectoryWindows

    torch.manual_seed(0)
    metadata = read_metadata(ballistic)
    model = LearnedSimulator(metadata, GNSConfig(latent_size=16, message_passing_steps=2))
    windows = TrajectoryWindows(read_trajectories(ballistic / "train.npz", metadata), future=2)
    batch = windows.batch([0, 3])
    expected, history = {}, batch.history
    for unrolls in (1, 2):
        with torch.no_grad():
            history = torch.cat([history[:, 1:], model.step(history, batch.particle_type, batch.batch)[:, None]], 1)
        target = (model.target_acceleration(history, batch.future[:, unrolls - 1]) - model.acc_mean) / model.acc_std
        loss = torch.nn.functional.mse_loss(model(history, batch.particle_type, batch.batch), target)
        expected[unrolls] = float(loss)
    assert abs(expected[1] - expected[2]) > 1e-6 * expected[1]
    # With probability 1 and at most 2 steps, every loss is that after 1 or 2 of the model's steps.
    loss_fn = _noisy_loss(0.0, model, pushforward=2, probability=1.0)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        value = float(loss_fn(model, batch))
        seen |= {k for k, v in expected.items() if v == pytest.approx(value, rel=1e-5)}
        assert any(v == pytest.approx(value, rel=1e-5) for v in expected.values())
    assert seen == {1, 2}
    # Without pushforward it is the one-step loss against the next frame.
    plain = _noisy_loss(0.0, model)(model, batch)
    target = (model.target_acceleration(batch.history, batch.target) - model.acc_mean) / model.acc_std
    one_step = torch.nn.functional.mse_loss(model(batch.history, batch.particle_type, batch.batch), target)
    assert float(plain) == pytest.approx(float(one_step), rel=1e-5)
    # The relative noise scales with the data's velocity spread.
    config = SimulateConfig(relative_noise=0.5)
    assert _noise_std(config, metadata) == pytest.approx(0.5 * float(np.mean(metadata.vel_std)))
    assert _noise_std(SimulateConfig(), metadata) == pytest.approx(0.3 * float(np.mean(metadata.vel_std)))
    assert _noise_std(SimulateConfig(noise_std=6.7e-4, relative_noise=0.5), metadata) == 6.7e-4


def test_the_model_size_follows_the_time_budget(ballistic, tmp_path, one_thread):
    engine = SimulateConfig().train
    short = SimulateConfig(train=dataclasses.replace(engine, max_seconds=600)).for_budget()
    assert (short.latent_size, short.message_passing_steps) == (64, 5)
    for train_config in (engine, dataclasses.replace(engine, max_seconds=3600)):  # no limit, or a long one
        full = SimulateConfig(train=train_config).for_budget()
        assert (full.latent_size, full.message_passing_steps) == (128, 10)
    on_gpu = SimulateConfig(train=dataclasses.replace(engine, max_seconds=600, device="cuda")).for_budget()
    assert on_gpu.latent_size == 128
    chosen = SimulateConfig(latent_size=16, train=dataclasses.replace(engine, max_seconds=600)).for_budget()
    assert (chosen.latent_size, chosen.message_passing_steps) == (16, 5)
    # The run records the sizes it trained, not "none".
    config = SimulateConfig(train=dataclasses.replace(engine, steps=2, max_seconds=60, progress=False))
    train(config, ballistic, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run", task="simulate")
    assert checkpoint.model_config["latent_size"] == 64 and checkpoint.task_config["message_passing_steps"] == 5
