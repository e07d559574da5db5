"""Character-level language model on Tiny Shakespeare: validation bits per character.

Trains the stacked LSTM of ``structnets charlm`` (truncated BPTT, state carried across
chunks) for a fixed number of steps or seconds, measures bits per character on the whole
validation text (the last 10%), prints it beside the reference figure for small char-RNNs
and writes ``benchmarks/results/charlm.json`` and the learning curves beside it.

    python benchmarks/charlm.py                                  # CPU, about 10 minutes
    python benchmarks/charlm.py --device cuda --hidden-size 1024 --dropout 0.25 \\
        --batch-size 128 --bptt 128 --steps 3000 --max-train-seconds 300 --json benchmarks/results/charlm_cuda.json

The reference: small char-RNNs (and nanoGPT's small character transformer, 1.47) reach a
validation cross-entropy of about 1.4-1.5 on this text. Those figures are natural-log
losses (nats per character), as char-rnn and nanoGPT print them; in bits per character
they are 2.0-2.2. Both units are printed.
"""

import argparse
import dataclasses
import json
import math
import platform
import shutil
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)

from structnets.core.cells import ChainCell
from structnets.text.charlm import CharLMTaskConfig, train

HERE = Path(__file__).resolve().parent
REFERENCE_NATS = (1.4, 1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=1250, help="sets the learning-rate schedule's length")
    parser.add_argument("--max-train-seconds", type=float, default=600.0)
    parser.add_argument("--eval-every", type=int, default=125)
    parser.add_argument(
        "--num-threads", type=int, default=1, help="torch threads; 1 was fastest on the shared 2-core machine"
    )
    parser.add_argument("--data-dir", help="directory holding tinyshakespeare/input.txt")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/charlm-benchmark"))
    parser.add_argument("--json", type=Path, default=HERE / "results" / "charlm.json")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)

    engine = dataclasses.replace(
        CharLMTaskConfig().train,
        batch_size=args.batch_size,
        lr=args.lr,
        steps=args.steps,
        max_seconds=args.max_train_seconds,
        eval_every=args.eval_every,
        device=args.device,
        progress=not args.no_progress,
    )
    config = CharLMTaskConfig(
        cell=ChainCell(args.cell),
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        dropout=args.dropout,
        bptt=args.bptt,
        data_dir=None if args.data_dir is None else Path(args.data_dir),
        train=engine,
    )
    metrics = train(config, args.out_dir)
    timing = json.loads((args.out_dir / "timing.json").read_text())
    metrics["train_seconds"] = timing["train_seconds"]
    low, high = REFERENCE_NATS
    print(
        f"ours: {metrics['val_bpc']:.3f} bits per character ({metrics['val_nats_per_char']:.3f} nats) on the whole "
        f"validation text with the weights of step {metrics['best_step']} (the best estimate) of "
        f"{metrics['train_steps']} steps, {metrics['train_epochs']:.2f} epochs, {metrics['train_seconds']:.0f} s "
        f"on {args.device}"
    )
    print(
        f"reference: small char-RNN ~{low}-{high} nats per character "
        f"= {low / math.log(2):.2f}-{high / math.log(2):.2f} bits per character"
    )
    print("sample:\n" + metrics["sample"])
    environment = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name(),
        "machine": platform.machine(),
    }
    result = {
        "environment": environment,
        "ours_val_bpc": metrics["val_bpc"],
        "ours_val_nats_per_char": metrics["val_nats_per_char"],
        "reference_val_nats_per_char": list(REFERENCE_NATS),
        "reference_val_bpc": [low / math.log(2), high / math.log(2)],
        "metrics": metrics,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    curves = f"{args.json.with_suffix('')}_curves.png"
    shutil.copyfile(args.out_dir / "curves.png", curves)
    print(f"wrote {args.json}, {curves}")


if __name__ == "__main__":
    main()
