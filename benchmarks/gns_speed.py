"""Learned-simulator speed at WaterDrop scale: training and rollout steps per second.

1,500 particles of water at WaterDrop's density (about 15 neighbours within the radius),
latent size 128, 10 message-passing rounds, as in Sanchez-Gonzalez et al. (2020). Times a
training step (forward, backward, Adam) and a rollout step (forward, integrate, new
neighbour graph).

    python benchmarks/gns_speed.py [--device cuda] [--particles 1500]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)
from torch.nn import functional as F

from structnets.models.gns import GNSConfig, LearnedSimulator
from structnets.physics.particles import SimulationMetadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, default=1500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gns_speed.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    n, radius = args.particles, 0.015
    side = math.sqrt(n * math.pi * radius**2 / 15)  # square patch with ~15 neighbours each
    metadata = SimulationMetadata(
        bounds=[[0.1, 0.9], [0.1, 0.9]], dt=0.0025, sequence_length=1000, default_connectivity_radius=radius, dim=2,
        vel_mean=[0.0, 0.0], vel_std=[1e-3, 1e-3], acc_mean=[0.0, 0.0], acc_std=[1e-4, 1e-4],
    )  # fmt: skip
    model = LearnedSimulator(metadata, GNSConfig(latent_size=128, message_passing_steps=10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    start = 0.5 - side / 2 + torch.rand(n, 2, device=device) * side
    history = start.unsqueeze(1) + torch.randn(n, 6, 2, device=device).cumsum(1) * 1e-3
    kinds = torch.full((n,), 5, device=device)
    target = torch.randn(n, 2, device=device)
    edges = model.graph(history[:, -1]).shape[1]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        loss = F.mse_loss(model(history, kinds), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(fn, repeats: int) -> float:
        fn()
        sync()
        begin = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync()
        return repeats / (time.perf_counter() - begin)

    train_rate = timed(train_step, args.repeats)
    model.eval()
    rollout_rate = timed(lambda: model.rollout(history.transpose(0, 1), kinds, 1), args.repeats)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{_cpu_name()}, {torch.get_num_threads()} threads"
    )
    print(f"{n} particles, {edges} edges ({edges / n:.1f} per particle), latent 128, 10 rounds, on {machine}")
    print(f"  training steps/s: {train_rate:.2f}   rollout steps/s: {rollout_rate:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine,
                "particles": n,
                "edges": edges,
                "train_steps_per_second": train_rate,
                "rollout_steps_per_second": rollout_rate,
            },
            indent=2,
        )  # fmt: skip
        + "\n"
    )


if __name__ == "__main__":
    main()
