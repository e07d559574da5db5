"""Latency of an exported structnets.RNN (torch.export, ONNX Runtime) against eager.

One bidirectional two-layer RNN per size, batch-first, with variable lengths, inference
only (eval, no gradients). Each is exported once at small example sizes with dynamic batch,
time and lengths (``torch.export.export``, then ``torch.onnx.export(..., dynamo=True)``),
then timed at the benchmark sizes, which differ from the example's. Exported, the RNN runs a
masked scan over time (ONNX ``Scan``); eager, it packs the batch and calls torch's fused
kernel (``fused=True``) or the level loop (``fused=False``); ``torch.nn`` is the same
weights in ``torch.nn.LSTM/GRU`` on the packed batch. Figures are medians of interleaved
repeats, in milliseconds per call, with the largest difference from eager.

    python benchmarks/export_rnn.py                                   # about a minute on 2 CPU cores
    python benchmarks/export_rnn.py --cell gru --threads 4 --json benchmarks/results/export_rnn_gru.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
from export_models import export_machine, print_case, time_interleaved  # noqa: E402
from torch.export import Dim
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import structnets as sn

HERE = Path(__file__).resolve().parent
SIZES = [(1, 32, 32, 64), (16, 64, 64, 128), (64, 100, 64, 256)]  # batch, steps, input, hidden
CELLS = {"lstm": sn.LSTMCell, "gru": sn.GRUCell}


class WithLengths(torch.nn.Module):
    """The exported signature: a padded batch and its lengths."""

    def __init__(self, rnn: sn.RNN) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.rnn(x, lengths=lengths)[0]


def one_size(cell: str, batch: int, steps: int, inputs: int, hidden: int, repeats: int, threads: int) -> dict:
    import onnxruntime

    torch.manual_seed(0)
    rnn = sn.RNN(inputs, hidden, 2, True, True, 0.0, True, cell=CELLS[cell]).eval()
    loop = sn.RNN.from_torch(rnn.to_torch(), fused=False).eval()
    reference = rnn.to_torch().eval()
    model = WithLengths(rnn)
    example = (torch.randn(2, 5, inputs), torch.tensor([5, 3]))
    batch_dim = Dim("batch", min=1, max=4096)
    shapes = ({0: batch_dim, 1: Dim("steps", min=1, max=8192)}, {0: batch_dim})
    start = time.perf_counter()
    program = torch.export.export(model, example, dynamic_shapes=shapes)
    export_s = time.perf_counter() - start
    exported = program.module()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(model, example, dynamic_shapes=shapes, dynamo=True, verbose=False)
    onnx_export_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rnn.onnx"
        onnx_program.save(str(path))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, steps, inputs, generator=generator)
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    feeds = dict(zip(names, (x.numpy(), lengths.numpy())))

    def torch_nn() -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=steps)[0]

    cases = {
        "eager (fused=True)": lambda: rnn(x, lengths=lengths)[0],
        "eager (fused=False, level loop)": lambda: loop(x, lengths=lengths)[0],
        "torch.nn (packed)": torch_nn,
        "torch.export module": lambda: exported(x, lengths),
        "onnxruntime": lambda: session.run(None, feeds)[0],
    }
    with torch.no_grad():
        eager = cases["eager (fused=True)"]()
        difference = {
            "torch.export module": float((exported(x, lengths) - eager).abs().max()),
            "onnxruntime": float((torch.from_numpy(session.run(None, feeds)[0]) - eager).abs().max()),
            "eager (fused=False, level loop)": float((loop(x, lengths=lengths)[0] - eager).abs().max()),
        }
        ms = time_interleaved(cases, repeats)
    base = ms["eager (fused=True)"]
    return {
        "sizes": dict(batch=batch, steps=steps, input=inputs, hidden=hidden, layers=2, bidirectional=True),
        "example_sizes": dict(batch=2, steps=5),
        "export_seconds": {"torch.export": export_s, "torch.onnx (dynamo)": onnx_export_s},
        "ms": ms,
        "ratio_to_eager": {name: value / base for name, value in ms.items()},
        "max_abs_difference_from_eager": difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="lstm", choices=sorted(CELLS), help="the RNN's cell (default: lstm)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per case, interleaved (default: 7)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and onnxruntime")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "export_rnn.json", help="where to write the figures"
    )
    args = parser.parse_args()
    machine = export_machine(args.threads)
    results = []
    for batch, steps, inputs, hidden in SIZES:
        case = one_size(args.cell, batch, steps, inputs, hidden, args.repeats, args.threads)
        results.append(case)
        print_case(f"{args.cell.upper()} {case['sizes']}", case, machine, width=34)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "cell": args.cell, "cases": results}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
