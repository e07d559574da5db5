import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from structnets.models.gns import GNSConfig, LearnedSimulator
from structnets.physics.particles import Trajectory, read_metadata, write_trajectories
from structnets.physics.simulate import TrainConfig, evaluate, render, train


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


def test_step_and_rollout_shapes(ballistic):
    model = LearnedSimulator(read_metadata(ballistic), GNSConfig(latent_size=16, message_passing_steps=2))
    history = torch.rand(7, 6, 2) * 0.2 + 0.4
    kinds = torch.full((7,), 5)
    assert model(history, kinds).shape == (7, 2) and model.step(history, kinds).shape == (7, 2)
    assert model.rollout(history.transpose(0, 1), kinds, 4).shape == (4, 7, 2)


def test_training_beats_constant_velocity_and_writes_everything(ballistic, tmp_path):
    config = TrainConfig(latent_size=32, message_passing_steps=2, steps=300, lr=3e-3, noise_std=0.0)
    metrics = train(config, ballistic, tmp_path / "run", progress=False)
    assert metrics["steps"] == 300 and metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    result = evaluate(tmp_path / "run", ballistic, "test", tmp_path / "eval")
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(on_disk) >= {"one_step_mse", "rollout_mse", "baseline_one_step_mse", "baseline_rollout_mse"}
    # Gravity is all there is to learn; constant velocity misses it quadratically in time.
    assert result["rollout_mse"] < 0.3 * result["baseline_rollout_mse"]
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["gns_config"]["latent_size"] == 32
    gif = render(tmp_path / "eval" / "rollout.npz", tmp_path / "rollout.gif", every=8)
    assert gif.stat().st_size > 1000


def test_simulate_command_line(tmp_path, capsys):
    from structnets.cli import main

    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    assert (
        main(["simulate", "generate", "--out", data, "--frames", "20", "--train", "1", "--valid", "1", "--test", "1"])
        == 0
    )
    small = ["--latent-size", "16", "--message-passing-steps", "2", "--steps", "5", "--no-progress"]
    assert main(["simulate", "train", "--data", data, "--out", run, *small]) == 0
    assert main(["simulate", "evaluate", "--model", run, "--data", data, "--out", str(tmp_path / "ev")]) == 0
    assert "rollout MSE" in capsys.readouterr().out
    gif = str(tmp_path / "r.gif")
    assert main(["simulate", "render", "--rollout", str(tmp_path / "ev" / "rollout.npz"), "--out", gif]) == 0
    one = str(tmp_path / "one.npz")
    assert main(["simulate", "rollout", "--model", run, "--data", data, "--trajectory", "0", "--out", one]) == 0
    assert main(["simulate", "rollout", "--model", run, "--data", data, "--trajectory", "5", "--out", one]) == 2
    assert "the test split has 1 trajectories" in capsys.readouterr().err
    (tmp_path / "data" / "metadata.json").write_text("{}")
    assert main(["simulate", "evaluate", "--model", run, "--data", data, "--out", str(tmp_path / "ev2")]) == 2
    assert "missing field(s) bounds" in capsys.readouterr().err


def test_resume_continues_from_the_checkpoint(ballistic, tmp_path):
    config = TrainConfig(latent_size=16, message_passing_steps=2, steps=5)
    train(config, ballistic, tmp_path / "run", progress=False)
    first = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert first["step"] == 5
    metrics = train(dataclasses.replace(config, steps=8), ballistic, tmp_path / "run", progress=False, resume=True)
    again = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert metrics["steps"] == 8 and again["step"] == 8
    assert not torch.equal(first["state_dict"]["decoder.0.weight"], again["state_dict"]["decoder.0.weight"])
    with pytest.raises(ValueError, match="was trained with"):
        train(
            dataclasses.replace(config, latent_size=8, steps=9),
            ballistic,
            tmp_path / "run",
            progress=False,
            resume=True,
        )


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
    metrics = json.loads((tmp_path / "ddp" / "train_metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 4
