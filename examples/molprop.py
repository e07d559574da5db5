"""Predict molecular properties with the MPNN: train on QM9, then predict for new molecules.

The library route to what ``structnets molprop train`` / ``predict`` do from the command
line. Trains Gilmer et al.'s MPNN (edge-network messages, GRU update, Set2Set readout) on
a random sample of QM9 read from the installed ``qm9pack`` package (``pip install
structnets[qm9]``), from SMILES alone so that new molecules need no geometry, then writes
predictions for ``examples/new_molecules.csv``, one row per input row, with an error
column for the rows that cannot be read.

    python examples/molprop.py                          # HOMO-LUMO gap, about 2 minutes on 2 CPU cores
    python examples/molprop.py --target u0 --target gap --sample 20000 --epochs 60
    python examples/molprop.py --subset                 # the 5,000-molecule subset of the data directory

The output directory gets metrics.json, timing.json, model.pt, predictions.csv, parity.png
and new_predictions.csv.
"""

import argparse
import csv
import logging
from pathlib import Path

from structnets.chem import CHEMICAL_ACCURACY
from structnets.chem.molprop import MolpropConfig, predict, train, training

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", help="QM9 target(s); default: gap")
    parser.add_argument("--sample", type=int, default=10000, help="molecules drawn from QM9")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--subset", action="store_true", help="the subset in $STRUCTNETS_DATA_DIR instead of qm9pack")
    parser.add_argument("--molecules", type=Path, default=HERE / "new_molecules.csv")
    parser.add_argument("--out", type=Path, default=Path("runs/molprop-qm9"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    config = MolpropConfig(
        dataset="qm9-subset" if args.subset else "qm9",
        sample=min(args.sample, 5000) if args.subset else args.sample,
        target_columns=tuple(args.target or ["gap"]),
        train=training(epochs=args.epochs, seed=0),
    )
    metrics = train(config, args.out)
    for name, values in metrics["test"].items():
        ratio = values["mae"] / CHEMICAL_ACCURACY[name]
        print(f"test {name}: MAE {values['mae']:.4g} ({ratio:.1f}x chemical accuracy), R^2 {values['r2']:.3f}")

    failed = predict(args.out, args.molecules, "smiles", args.out / "new_predictions.csv")
    with (args.out / "new_predictions.csv").open() as handle:
        for row in csv.DictReader(handle):
            values = (
                ", ".join(f"{t} {row[t + '_pred']}" for t in config.target_columns)
                if not row["error"]
                else row["error"]
            )
            print(f"  {row.get('name', ''):15s} {row['smiles']:12s} {values}")
    if failed:
        print(f"{failed} molecule(s) could not be read; their rows carry the reason")


if __name__ == "__main__":
    main()
