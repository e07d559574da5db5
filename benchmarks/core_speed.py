"""Speed of the core: structnets' RNN and level loop against torch.nn, and Tree-LSTM batching.

Measures forward + backward time (median of interleaved repeats) for
1. an LSTM at batch 64, length 100, input 64, hidden 256: ``torch.nn.LSTM`` (the peer),
   ``structnets.RNN`` (fused kernels), ``structnets.RNN(fused=False)`` (the level loop, with
   the LSTM cell fused into one autograd node) and ``fused=False, fuse_cell=False`` (the
   level loop driving the cell through autograd), plus a Python loop of ``torch.nn.LSTMCell``;
2. a child-sum Tree-LSTM over a forest of 256 random binary trees of 10-50 leaves,
   level-batched, against the same cell applied one node at a time (timed on a subset of
   trees and scaled per node) and against the generic chain LSTM on chains with the same
   number of nodes and of levels.

    python benchmarks/core_speed.py [--device cpu|cuda] [--capture] [--out benchmarks/results/core_speed.json]

``--capture`` adds the level loop captured once per schedule
(:func:`structnets.core.capture.capture_levels`: CUDA graphs on a GPU) beside eager and
``torch.nn.LSTM``, for the chain and for the forest.

Writes the figures as JSON and prints a table with the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import structnets as sn
from structnets.core.cells import Incoming


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(cases: dict[str, Callable[[], None]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median milliseconds per call, the cases interleaved so that machine noise hits all alike."""
    for fn in cases.values():
        fn()
        fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def _forward_backward(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.sum().backward()

    return run


def lstm_case(device: torch.device, repeats: int) -> dict:
    batch, steps, inputs, hidden = 64, 100, 64, 256
    x = torch.randn(steps, batch, inputs, device=device)
    peer = torch.nn.LSTM(inputs, hidden).to(device)
    fused = sn.RNN.from_torch(peer, fused=True)
    loop = sn.RNN.from_torch(peer, fused=False)
    loop_autograd = sn.RNN.from_torch(peer, fused=False, fuse_cell=False)
    cell = torch.nn.LSTMCell(inputs, hidden).to(device)

    def cell_loop() -> None:
        cell.zero_grad(set_to_none=True)
        state, outs = None, []
        for x_t in x.unbind(0):
            state = cell(x_t, state)
            outs.append(state[0])
        torch.stack(outs).sum().backward()

    cases = {
        "torch.nn.LSTM": _forward_backward(peer, x),
        "structnets.RNN (fused)": _forward_backward(fused, x),
        "structnets.RNN (fused=False, level loop)": _forward_backward(loop, x),
        "structnets.RNN (fused=False, fuse_cell=False)": _forward_backward(loop_autograd, x),
        "python loop of torch.nn.LSTMCell": cell_loop,
    }
    ms = time_interleaved(cases, device, repeats)
    base = ms["torch.nn.LSTM"]
    return {
        "sizes": dict(batch=batch, length=steps, input=inputs, hidden=hidden),
        "ms": ms,
        "ratio_to_torch": {name: value / base for name, value in ms.items()},
    }


def random_forest(num_trees: int, min_leaves: int, max_leaves: int, rng: random.Random) -> tuple[torch.Tensor, int]:
    """Child -> parent edges of random binary trees: adjacent subtrees merged at random."""
    edges, next_id = [], 0
    for _ in range(num_trees):
        leaves = rng.randint(min_leaves, max_leaves)
        frontier = list(range(next_id, next_id + leaves))
        next_id += leaves
        while len(frontier) > 1:
            k = rng.randrange(len(frontier) - 1)
            edges += [(frontier[k], next_id), (frontier[k + 1], next_id)]
            frontier[k : k + 2] = [next_id]
            next_id += 1
    return torch.tensor(edges, dtype=torch.long).t().contiguous(), next_id


def tree_case(device: torch.device, repeats: int, inputs: int, hidden: int, subset_trees: int) -> dict:
    rng = random.Random(0)
    edge_index, num_nodes = random_forest(256, 10, 50, rng)
    edge_index = edge_index.to(device)
    x = torch.randn(num_nodes, inputs, device=device)
    cell = sn.ChildSumTreeLSTMCell(inputs, hidden).to(device)
    start = time.perf_counter()
    levels = sn.schedules.build_levels(edge_index, sn.schedules.compute_levels(edge_index, num_nodes))
    schedule_ms = (time.perf_counter() - start) * 1e3
    sn.topological_levels(edge_index, num_nodes)  # warm the cache, as a training loop would

    def batched() -> None:
        cell.zero_grad(set_to_none=True)
        h, _ = sn.propagate(cell, x, edge_index, sn.Topological())
        h.sum().backward()

    num_levels = levels.num_levels
    num_chains = num_nodes // num_levels
    chain_x = torch.randn(num_levels, num_chains, inputs, device=device)
    chain_rnn = sn.RNN(inputs, hidden, fused=False).to(device)

    # One node at a time: plain recursion over a subset of the trees.
    children: dict[int, list[int]] = {}
    for child, parent in edge_index.t().tolist():
        children.setdefault(parent, []).append(child)
    has_parent = set(edge_index[0].tolist())
    roots = [v for v in range(num_nodes) if v not in has_parent][:subset_trees]
    subset_nodes = 0

    def count(v: int) -> int:
        return 1 + sum(count(c) for c in children.get(v, []))

    subset_nodes = sum(count(r) for r in roots)
    zero_index = torch.zeros(1, dtype=torch.long, device=device)

    def node(v: int):
        projected = cell.project_input(x[v : v + 1])
        kids = [node(c) for c in children.get(v, [])]
        if not kids:
            return cell.step(projected, None)
        states = (torch.cat([k[0] for k in kids]), torch.cat([k[1] for k in kids]))
        return cell.step_incoming(projected, Incoming(states, zero_index.expand(len(kids)), 1, False))

    def one_at_a_time() -> None:
        cell.zero_grad(set_to_none=True)
        total = sum(node(r)[0].sum() for r in roots)
        total.backward()

    ms = time_interleaved(
        {"tree, level-batched": batched, "chains, level loop": _forward_backward(chain_rnn, chain_x)}, device, repeats
    )
    single = time_interleaved({"tree, one node at a time (subset)": one_at_a_time}, device, max(2, repeats // 3))
    per_node_single = single["tree, one node at a time (subset)"] / subset_nodes
    one_at_a_time_ms = per_node_single * num_nodes
    return {
        "sizes": dict(trees=256, leaves="10-50", nodes=num_nodes, levels=num_levels, input=inputs, hidden=hidden),
        "chains": dict(count=num_chains, length=num_levels, nodes=num_chains * num_levels),
        "schedule_build_ms": schedule_ms,
        "ms": {
            "tree, level-batched": ms["tree, level-batched"],
            "chains, level loop (same nodes and levels)": ms["chains, level loop"],
            "tree, one node at a time (scaled from subset)": one_at_a_time_ms,
        },
        "one_at_a_time_subset_nodes": subset_nodes,
        "speedup_over_one_at_a_time": one_at_a_time_ms / ms["tree, level-batched"],
        "tree_over_chain": ms["tree, level-batched"] / ms["chains, level loop"],
    }


def _chain_edges(steps: int, batch: int, device: torch.device) -> torch.Tensor:
    """Edges of ``batch`` chains of ``steps`` nodes, node ``t * batch + b`` (time-major, as ``[T, B, F]`` flattens)."""
    ids = torch.arange(steps * batch, device=device).view(steps, batch)
    return torch.stack([ids[:-1].reshape(-1), ids[1:].reshape(-1)])


def _level_loop(run: Callable, cell: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        cell.zero_grad(set_to_none=True)
        h, _ = run(x)
        h.sum().backward()

    return step


def capture_case(device: torch.device, repeats: int) -> dict:
    """The level loop eager and captured per schedule (structnets.core.capture), against cuDNN / torch.nn.LSTM."""
    from structnets.core.capture import capture_levels

    out = {}
    # 1. The generic chain loop: batch 64, length 100, 64 -> 256.
    batch, steps, inputs, hidden = 64, 100, 64, 256
    x = torch.randn(steps, batch, inputs, device=device)
    peer = torch.nn.LSTM(inputs, hidden).to(device)
    cell = sn.LSTMCell(inputs, hidden).to(device)
    edges = _chain_edges(steps, batch, device)
    flat = x.reshape(steps * batch, inputs)
    levels = sn.topological_levels(edges, steps * batch)
    captured = capture_levels(cell, edges, steps * batch)
    ms = time_interleaved(
        {
            "torch.nn.LSTM": _forward_backward(peer, x),
            "level loop, eager": _level_loop(lambda v: sn.propagate_levels(cell, v, levels), cell, flat),
            "level loop, captured": _level_loop(captured, cell, flat),
        },
        device,
        repeats,
    )
    out["chain"] = {"sizes": dict(batch=batch, length=steps, input=inputs, hidden=hidden), "ms": ms}
    # 2. A forest against a cuDNN chain with the same nodes and levels.
    edge_index, num_nodes = random_forest(256, 10, 50, random.Random(0))
    edge_index = edge_index.to(device)
    tree_levels = sn.topological_levels(edge_index, num_nodes)
    count = tree_levels.num_levels
    tree_cell = sn.ChildSumTreeLSTMCell(inputs, hidden).to(device)
    tree_x = torch.randn(num_nodes, inputs, device=device)
    captured_tree = capture_levels(tree_cell, edge_index, num_nodes)
    chain_x = torch.randn(count, num_nodes // count, inputs, device=device)
    ms = time_interleaved(
        {
            "torch.nn.LSTM, chains of the same nodes and levels": _forward_backward(peer, chain_x),
            "tree, eager": _level_loop(lambda v: sn.propagate_levels(tree_cell, v, tree_levels), tree_cell, tree_x),
            "tree, captured": _level_loop(captured_tree, tree_cell, tree_x),
        },
        device,
        repeats,
    )
    out["forest"] = {"sizes": dict(nodes=num_nodes, levels=count, input=inputs, hidden=hidden), "ms": ms}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "core_speed.json")
    parser.add_argument(
        "--capture",
        action="store_true",
        help="also time the level loop captured per schedule (torch.compile reduce-overhead: CUDA graphs on a GPU, "
        "an inductor-compiled loop on a CPU) against torch.nn.LSTM",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    lstm = lstm_case(device, args.repeats)
    print(f"LSTM forward+backward, {lstm['sizes']}, on {machine['device']} ({machine['cpu_threads']} threads)")
    for name, value in lstm["ms"].items():
        print(f"  {name:48s} {value:8.1f} ms  {lstm['ratio_to_torch'][name]:5.2f}x torch.nn.LSTM")
    trees = []
    for inputs, hidden in [(64, 256), (64, 64)]:
        case = tree_case(device, args.repeats, inputs, hidden, subset_trees=16)
        trees.append(case)
        print(f"Child-sum Tree-LSTM forward+backward, {case['sizes']}")
        for name, value in case["ms"].items():
            print(f"  {name:45s} {value:8.1f} ms")
        print(
            f"  level-batched is {case['speedup_over_one_at_a_time']:.0f}x faster than one node at a time; "
            f"{case['tree_over_chain']:.2f}x the chain level loop"
        )
    record = {"machine": machine, "lstm": lstm, "tree_lstm": trees}
    if args.capture:
        record["capture"] = capture_case(device, args.repeats)
        for name, case in record["capture"].items():
            base = next(iter(case["ms"].values()))
            print(f"{name} {case['sizes']}, captured per schedule:")
            for label, value in case["ms"].items():
                print(f"  {label:52s} {value:8.1f} ms  {value / base:5.2f}x torch.nn.LSTM")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
