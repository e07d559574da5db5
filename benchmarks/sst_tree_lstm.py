"""Tree-LSTM sentiment on SST: dev accuracy beside Tai et al., and speed.

Two parts, one run:

1. Trains ``structnets trees train`` with its defaults (binary Tree-LSTM, embeddings 100
   learned from scratch, hidden 150, Adagrad 0.05, batch 25, 20 epochs) and reports the
   dev root accuracy, fine-grained and binary, beside Tai et al. (2015): 51.0% / 88.0% with
   GloVe vectors, which cannot be downloaded here.
2. Speed, forward + backward over all of SST train, level-batched: seconds per epoch at
   batch 25 and at DGL's batch 256 (DGL's Tree-LSTM example publishes 3.18 s per epoch at
   batch 256 on a V100), and nodes per second beside the core's chain LSTM run on chains
   with the same nodes (one chain per tree, as long as the tree has nodes).

    python benchmarks/sst_tree_lstm.py --data-dir ../shared/data [--device cuda] [--epochs 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_sequence

import structnets as sn
from structnets.graphs.trees import Vocabulary, batch_trees
from structnets.models import TreeClassifier
from structnets.text.sentiment import SentimentConfig, train
from structnets.text.sst import load_sst

TAI_FINE, TAI_BINARY = 0.510, 0.880
DGL_SECONDS_PER_EPOCH_V100 = 3.18


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def tree_epoch_seconds(trees, vocabulary, batch_size: int, device: torch.device) -> tuple[float, int]:
    model = TreeClassifier(SentimentConfig().model_config(len(vocabulary))).to(device)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.05)
    batches = [batch_trees(trees[k : k + batch_size], vocabulary).to(device) for k in range(0, len(trees), batch_size)]

    def epoch() -> float:
        _sync(device)
        start = time.perf_counter()
        for batch in batches:
            loss = F.cross_entropy(model(batch), batch.y, ignore_index=-1)  # every labelled node
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    epoch()  # warm-up; also computes and caches every batch's levels
    return statistics.median(epoch() for _ in range(2)), sum(b.num_nodes for b in batches)


def chain_epoch_seconds(trees, batch_size: int, fused: bool, device: torch.device) -> float:
    """An LSTM over one chain per tree, as many steps as the tree has nodes, same sizes."""
    rnn = sn.RNN(100, 150, fused=fused).to(device)
    head = torch.nn.Linear(150, 5).to(device)
    optimizer = torch.optim.Adagrad([*rnn.parameters(), *head.parameters()], lr=0.05)
    batches = []
    for k in range(0, len(trees), batch_size):
        lengths = [len(t) for t in trees[k : k + batch_size]]
        batches.append(pack_sequence([torch.randn(n, 100, device=device) for n in lengths], enforce_sorted=False))

    def epoch() -> float:
        _sync(device)
        start = time.perf_counter()
        for packed in batches:
            out, _ = rnn(packed)
            loss = head(out.data).logsumexp(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    epoch()
    return statistics.median(epoch() for _ in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--limit", type=int, default=None, help="first N training trees only (a quick check)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sst_tree_lstm.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{_cpu_name()}, {torch.get_num_threads()} threads"
    )
    results: dict = {"machine": machine, "torch": torch.__version__}

    trees = load_sst("train", args.data_dir, limit=args.limit)
    vocabulary = Vocabulary.build(trees)
    nodes = sum(len(t) for t in trees)
    print(f"SST train: {len(trees)} trees, {nodes} nodes; on {machine}")
    speed = {}
    for batch_size in (25, 256):
        seconds, _ = tree_epoch_seconds(trees, vocabulary, batch_size, device)
        chain_fused = chain_epoch_seconds(trees, batch_size, True, device)
        chain_loop = chain_epoch_seconds(trees, batch_size, False, device)
        speed[batch_size] = {
            "tree_lstm_seconds_per_epoch": seconds,
            "tree_lstm_nodes_per_second": nodes / seconds,
            "chain_lstm_fused_nodes_per_second": nodes / chain_fused,
            "chain_lstm_level_loop_nodes_per_second": nodes / chain_loop,
        }
        print(
            f"  batch {batch_size:3d}: Tree-LSTM {seconds:6.2f} s/epoch ({nodes / seconds:,.0f} nodes/s); "
            f"chain LSTM on the same nodes: fused {nodes / chain_fused:,.0f} nodes/s, "
            f"level loop {nodes / chain_loop:,.0f} nodes/s"
        )
    print(f"  DGL's Tree-LSTM example (published, V100, batch 256): {DGL_SECONDS_PER_EPOCH_V100} s/epoch")
    results["speed"] = speed
    results["dgl_seconds_per_epoch_v100_batch256"] = DGL_SECONDS_PER_EPOCH_V100

    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            defaults = SentimentConfig()
            engine = dataclasses.replace(defaults.train, epochs=args.epochs, device=args.device, progress=False)
            config = dataclasses.replace(defaults, data_dir=args.data_dir, limit=args.limit, train=engine)
            metrics = train(config, Path(tmp))
            timing = json.loads((Path(tmp) / "timing.json").read_text())
        dev = metrics["dev"]
        results["training"] = {
            "epochs": args.epochs,
            "best_epoch": metrics["best_epoch"],
            "seconds_per_epoch": timing["seconds_per_epoch"],
            "dev_fine_accuracy": dev["fine_accuracy"],
            "dev_binary_accuracy": dev["binary_accuracy"],
            "history": [
                {k: h[k] for k in ("epoch", "dev_fine_accuracy", "dev_binary_accuracy")}
                for h in metrics["history"]
                if "dev_fine_accuracy" in h
            ],
        }
        print(
            f"dev root accuracy: fine {dev['fine_accuracy']:.3f}, binary {dev['binary_accuracy']:.3f} "
            f"(best epoch {metrics['best_epoch']} of {args.epochs}, {timing['seconds_per_epoch']:.1f} s/epoch "
            "training, dev validation included)"
        )
        print(f"Tai et al. 2015 (GloVe vectors): fine {TAI_FINE:.3f}, binary {TAI_BINARY:.3f}")
    results["tai_2015"] = {"fine": TAI_FINE, "binary": TAI_BINARY}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
