"""Latency of exported structnets models (torch.export, ONNX Runtime) against eager.

Three models at realistic small sizes, inference only (eval, no gradients), each exported
once at small example sizes with dynamic dimensions (``torch.export.export``, then
``torch.onnx.export(..., dynamo=True)``) and timed at the benchmark sizes, which differ:

* TreeClassifier: Tai et al.'s N-ary Tree-LSTM (embedding 300, hidden 150, 5 classes) on a
  batch of 25 random binary parses of 19 words (SST's mean sentence length). Exported
  (:meth:`structnets.models.TreeClassifier.exportable`), the schedule is computed outside
  and passed in as index tensors, ``--max-levels`` levels of them, those past the forest's
  depth empty; the program's level loop rewrites one state buffer per level.
* MPNN: Gilmer et al.'s MPNN (hidden 64, 3 rounds, Set2Set) on 64 drug-like molecules from
  ``torch_geometric.utils.from_smiles`` (integer features, ``MPNNConfig.for_from_smiles``).
  Eager uses one edge-network matrix per distinct bond type; exported, one per bond.
* GNS: the learned simulator's one-step model (latent 128, 10 rounds) on 1,000 particles
  with the radius graph computed outside (about 15 neighbours each).

Figures are medians of interleaved repeats, in milliseconds per call, with the largest
absolute difference from eager.

    python benchmarks/export_models.py                 # about two minutes on 2 CPU cores
    python benchmarks/export_models.py --threads 2 --json benchmarks/results/export_models_2t.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import tempfile
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)
from core_speed import time_interleaved as _time_on  # noqa: E402
from torch.export import Dim

from structnets.graphs.trees import Tree, Vocabulary, batch_trees
from structnets.models import MPNN, GNSConfig, LearnedSimulator, MPNNConfig, TreeClassifier, TreeClassifierConfig

HERE = Path(__file__).resolve().parent
SMILES = [
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CC(=O)Nc1ccc(O)cc1",
    "c1ccc2c(c1)cccn2",
    "OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O",
    "CCN(CC)CCNC(=O)c1ccc(N)cc1",
    "COc1ccc2[nH]cc(CCN)c2c1",
    "CC1=CC(=O)C=CC1=O",
    "Clc1ccc(cc1)C(c1ccccc1)N1CCNCC1",
    "O=C(O)CCCCC(=O)O",
    "C1CCC(CC1)NC(=O)N",
    "CC(C)NCC(O)COc1cccc2ccccc12",
    "N#Cc1ccc(cc1)C(=O)N",
    "CS(=O)(=O)c1ccc(cc1)C1=C(C(=O)OC1)c1ccccc1",
    "FC(F)(F)c1ccc(Oc2ccccc2)cc1",
]


def time_interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds per call on the CPU, the cases interleaved (core_speed's timer)."""
    return _time_on(cases, torch.device("cpu"), repeats)


def _as_numpy(value: torch.Tensor):
    return value.detach().cpu().numpy()


def measure(
    name: str,
    module: torch.nn.Module,
    eager: Callable[[], torch.Tensor],
    example: tuple,
    inputs: tuple,
    shapes: object,
    sizes: dict,
    repeats: int,
    threads: int,
    kwargs: dict | None = None,
    input_kwargs: dict | None = None,
) -> dict:
    """Exports ``module`` at ``example``, then times eager, the exported module and onnxruntime at ``inputs``."""
    import onnxruntime

    kwargs, input_kwargs = kwargs or {}, input_kwargs or {}
    start = time.perf_counter()
    program = torch.export.export(module, example, kwargs=kwargs, dynamic_shapes=shapes)
    export_s = time.perf_counter() - start
    exported = program.module()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            module, example, kwargs=kwargs, dynamic_shapes=shapes, dynamo=True, verbose=False
        )
    onnx_export_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.onnx"
        onnx_program.save(str(path))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    values = [v for part in (*inputs, *input_kwargs.values()) for v in (part if isinstance(part, list) else [part])]
    feeds = {i.name: _as_numpy(v) for i, v in zip(session.get_inputs(), values)}
    cases = {
        "eager": eager,
        "torch.export module": lambda: exported(*inputs, **input_kwargs),
        "onnxruntime": lambda: session.run(None, feeds)[0],
    }
    with torch.no_grad():
        reference = eager()
        difference = {
            "torch.export module": float((cases["torch.export module"]() - reference).abs().max()),
            "onnxruntime": float((torch.from_numpy(cases["onnxruntime"]()) - reference).abs().max()),
        }
        ms = time_interleaved(cases, repeats)
    return {
        "model": name,
        "sizes": sizes,
        "export_seconds": {"torch.export": export_s, "torch.onnx (dynamo)": onnx_export_s},
        "ms": ms,
        "ratio_to_eager": {case: value / ms["eager"] for case, value in ms.items()},
        "max_abs_difference_from_eager": difference,
    }


def _random_parse(words: int, rng: random.Random) -> Tree:
    """A random binary bracketing of ``words`` leaves, nodes in pre-order."""
    parents: list[int | None] = []
    slots: list[int] = []
    tokens: list[str | None] = []

    def visit(count: int, parent: int | None, slot: int) -> None:
        node = len(parents)
        parents.append(parent)
        slots.append(slot)
        if count == 1:
            tokens.append(f"w{rng.randrange(5000)}")
            return
        tokens.append(None)
        left = rng.randint(1, count - 1)
        visit(left, node, 0)
        visit(count - left, node, 1)

    visit(words, None, 0)
    return Tree(parents, slots, [2] * len(parents), tokens)


def tree_case(repeats: int, threads: int, max_levels: int) -> dict:
    rng = random.Random(0)
    vocabulary = Vocabulary(["<unk>"] + [f"w{k}" for k in range(5000)])
    config = TreeClassifierConfig(len(vocabulary), 5, embedding_size=300, hidden_size=150)
    model = TreeClassifier(config).eval()
    program = model.exportable(max_levels=max_levels)
    batch = batch_trees([_random_parse(19, rng) for _ in range(25)], vocabulary)
    inputs = program.inputs(batch)
    depth = sum(1 for level in inputs[3] if level.numel())
    sizes = dict(trees=25, words=19, nodes=batch.num_nodes, levels=depth, max_levels=max_levels, hidden=150)
    return measure(
        "TreeClassifier",
        program,
        lambda: model(batch),
        program.example_inputs(),
        inputs,
        program.dynamic_shapes(),
        sizes,
        repeats,
        threads,
    )


def mpnn_case(repeats: int, threads: int) -> dict:
    from torch_geometric.data import Batch
    from torch_geometric.utils import from_smiles

    torch.manual_seed(0)
    model = MPNN(MPNNConfig.for_from_smiles(num_targets=1)).eval()
    molecules = [from_smiles(s) for s in SMILES]
    example = Batch.from_data_list(molecules[:3])
    batch = Batch.from_data_list([molecules[k % len(molecules)] for k in range(64)])
    atoms, bonds = Dim("atoms"), Dim("bonds")
    shapes = ({0: atoms}, {1: bonds}, {0: bonds}, {0: atoms})
    sizes = dict(molecules=64, atoms=batch.num_nodes, bonds=batch.num_edges, hidden=64, rounds=3)
    return measure(
        "MPNN",
        model,
        lambda: model(batch),
        (example.x, example.edge_index, example.edge_attr, example.batch),
        (batch.x, batch.edge_index, batch.edge_attr, batch.batch),
        shapes,
        sizes,
        repeats,
        threads,
    )


def gns_case(repeats: int, threads: int) -> dict:
    torch.manual_seed(0)
    radius = 0.015
    metadata = types.SimpleNamespace(
        bounds=[[0.1, 0.9], [0.1, 0.9]], default_connectivity_radius=radius, dim=2,
        vel_mean=[0.0, 0.0], vel_std=[1e-3, 1e-3], acc_mean=[0.0, 0.0], acc_std=[1e-4, 1e-4],
    )  # fmt: skip
    model = LearnedSimulator(metadata, GNSConfig(latent_size=128, message_passing_steps=10)).eval()

    def particles(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        side = math.sqrt(n * math.pi * radius**2 / 15)  # a square patch with ~15 neighbours each
        start = 0.5 - side / 2 + torch.rand(n, 2) * side
        history = start.unsqueeze(1) + torch.randn(n, 6, 2).cumsum(1) * 1e-3
        return history, torch.full((n,), 5), model.graph(history[:, -1])

    small, large = particles(100), particles(1000)
    shapes = {"history": {0: Dim("particles")}, "particle_type": {0: Dim("particles")}, "edge_index": {1: Dim("edges")}}
    history, kinds, graph = large
    sizes = dict(particles=1000, edges=graph.shape[1], latent=128, rounds=10)
    return measure(
        "GNS step",
        model,
        lambda: model(history, kinds, edge_index=graph),
        small[:2],
        (history, kinds),
        shapes,
        sizes,
        repeats,
        threads,
        kwargs={"edge_index": small[2]},
        input_kwargs={"edge_index": graph},
    )


def export_machine(threads: int) -> dict:
    """Sets torch's threads and describes the machine, for the export benchmarks' JSON."""
    torch.set_num_threads(threads)
    import onnxruntime

    return {
        "cpu": _cpu_name(),
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def print_case(title: str, case: dict, machine: dict, width: int) -> None:
    """One case's latencies, their ratio to eager and their largest difference from it."""
    print(f"{title} ({machine['threads']} thread(s), {machine['cpu']})")
    for name, value in case["ms"].items():
        diff = case["max_abs_difference_from_eager"].get(name)
        extra = f"  max |diff| {diff:.1e}" if diff is not None else ""
        print(f"  {name:{width}s} {value:9.2f} ms  {case['ratio_to_eager'][name]:6.2f}x eager{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per case, interleaved (default: 7)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and onnxruntime")
    parser.add_argument(
        "--max-levels",
        type=int,
        default=32,
        help="levels the exported TreeClassifier's schedule holds, its bound on depth (default: 32)",
    )
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "export_models.json", help="where to write the figures"
    )
    args = parser.parse_args()
    machine = export_machine(args.threads)
    results = []
    for case in (tree_case(args.repeats, args.threads, args.max_levels), mpnn_case(args.repeats, args.threads),
                 gns_case(args.repeats, args.threads)):  # fmt: skip
        results.append(case)
        print_case(f"{case['model']} {case['sizes']}", case, machine, width=22)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "cases": results}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
