"""Training throughput of structnets' MPNN against torch_geometric's NNConv + GRU + Set2Set.

Both models have the same sizes and parameters' shapes: atom embedding, an edge network
``Linear(bond, 128) - ReLU - Linear(128, d * d)``, ``T`` rounds of sum-aggregated edge-network
messages with a GRU update, Set2Set over ``[h^T, h^0]``, and a two-layer head. The
torch_geometric model is written as its QM9 example writes it (NNConv inside the round loop,
``torch.nn.GRU``), so it evaluates the edge network once per round; structnets evaluates it
once per forward pass. Same molecules (QM9 subset, Gilmer's inputs: explicit hydrogens and
distances), same batches, interleaved timing.

    python benchmarks/mpnn_throughput.py [--molecules 1024] [--batch-size 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)
from torch import nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import NNConv
from torch_geometric.nn.aggr import Set2Set as PyGSet2Set

from structnets.chem import QM9_CONFIG, atom_feature_size, bond_feature_size, load_qm9
from structnets.models import MPNN, MPNNConfig


class PyGMPNN(nn.Module):
    """The torch_geometric formulation (after its examples/qm9_nn_conv.py), at our sizes."""

    def __init__(self, config: MPNNConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.rounds = config.rounds
        self.embed = nn.Sequential(nn.Linear(config.atom_features, d), nn.ReLU())
        edge_net = nn.Sequential(
            nn.Linear(config.bond_features, config.edge_hidden_size),
            nn.ReLU(),
            nn.Linear(config.edge_hidden_size, d * d),
        )
        self.conv = NNConv(d, d, edge_net, aggr="add", root_weight=False, bias=False)
        self.gru = nn.GRU(d, d)
        self.set2set = PyGSet2Set(2 * d, processing_steps=config.set2set_steps)
        self.head = nn.Sequential(
            nn.Linear(4 * d, config.readout_hidden_size),
            nn.ReLU(),
            nn.Linear(config.readout_hidden_size, config.num_targets),
        )

    def forward_batch(self, data):
        h0 = self.embed(data.x)
        out, h = h0, h0.unsqueeze(0)
        for _ in range(self.rounds):
            m = self.conv(out, data.edge_index, data.edge_attr)
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        return self.head(self.set2set(torch.cat([out, h0], -1), data.batch))


def _epoch_seconds(model, batches, optimizer) -> float:
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model.forward_batch(batch), batch.y)
        loss.backward()
        optimizer.step()
    if batches and batches[0].x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--molecules", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mpnn_throughput.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    dataset = load_qm9(args.data_dir, QM9_CONFIG, limit=args.molecules)
    graphs = [dataset[i] for i in range(len(dataset))]
    batches = [b.to(device) for b in DataLoader(graphs, batch_size=args.batch_size, shuffle=False)]
    config = MPNNConfig(
        atom_features=atom_feature_size(QM9_CONFIG),
        bond_features=bond_feature_size(QM9_CONFIG),
        num_targets=dataset.targets.shape[1],
        hidden_size=args.hidden_size,
    )
    models = {
        "structnets MPNN": MPNN(config).to(device),
        "torch_geometric NNConv+GRU+Set2Set": PyGMPNN(config).to(device),
    }
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    for name, model in models.items():
        _epoch_seconds(model, batches[:3], optimizers[name])
    seconds = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            seconds[name].append(_epoch_seconds(model, batches, optimizers[name]))
    throughput = {name: len(graphs) / statistics.median(values) for name, values in seconds.items()}
    ratio = throughput["structnets MPNN"] / throughput["torch_geometric NNConv+GRU+Set2Set"]
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{_cpu_name()}, {torch.get_num_threads()} threads"
    )
    print(
        f"training throughput, QM9 subset ({len(graphs)} molecules, batch {args.batch_size}, d={args.hidden_size}) on {machine}"
    )
    for name, value in throughput.items():
        print(f"  {name:38s} {value:8.0f} molecules/s  ({counts[name]:,} parameters)")
    print(f"  ratio structnets / torch_geometric: {ratio:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine,
                "molecules": len(graphs),
                "batch_size": args.batch_size,
                "hidden_size": args.hidden_size,
                "molecules_per_second": throughput,
                "parameters": counts,
                "ratio": ratio,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
