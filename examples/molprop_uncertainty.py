"""Predictions with an uncertainty: an ensemble on ESOL, calibrated, then used on new molecules.

The library route to ``structnets molprop train --ensemble-size 5 --calibration-method
zscaling`` and ``molprop predict``: five MPNNs trained from different seeds on ESOL's
solubilities (with RDKit's 2D descriptors joined to the read-out), their spread rescaled on
the validation split (z-scaling), then ``examples/new_molecules.csv`` predicted with a
``<target>_std`` column beside each prediction::

    python examples/molprop_uncertainty.py                    # about 2 minutes on 2 CPU cores
    python examples/molprop_uncertainty.py --method mve       # one model with a variance head

The output directory gets metrics.json (RMSE, and the NLL, miscalibration area, ENCE and
Spearman of the uncertainty), model.pt .. model_4.pt, predictions.csv, parity.png and
new_predictions.csv. ESOL is read from the data directory ($STRUCTNETS_DATA_DIR).
"""

import argparse
import csv
import logging
from pathlib import Path

from structnets.chem.molprop import MolpropConfig, predict, train, training

HERE = Path(__file__).parent
TARGET = "measured log solubility in mols per litre"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["ensemble", "mve"], default="ensemble", help="the uncertainty method")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per model")
    parser.add_argument("--molecules", type=Path, default=HERE / "new_molecules.csv", help="CSV to predict")
    parser.add_argument("--out", type=Path, default=Path("runs/molprop-esol-uncertainty"), help="run directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    config = MolpropConfig(
        dataset="esol",
        molecule_featurizers=("rdkit_2d",),
        ensemble_size=5 if args.method == "ensemble" else 1,
        uncertainty_method=args.method,
        calibration_method="zscaling",
        train=training(epochs=args.epochs),
    )
    metrics = train(config, args.out)
    test = metrics["test"][TARGET]
    print(
        f"test RMSE {test['rmse']:.3f} log(mol/L); uncertainty: NLL {test['nll']:.3f}, "
        f"miscalibration area {test['miscalibration_area']:.3f}, Spearman(|error|, std) {test['spearman']:.3f}"
    )
    out = args.out / "new_predictions.csv"
    predict(args.out, args.molecules, None, out)
    with out.open(newline="") as handle:
        for row in csv.DictReader(handle):
            shown = (
                f"{float(row[TARGET + '_pred']):.2f} ± {float(row[TARGET + '_std']):.2f}" if not row["error"] else ""
            )
            print(f"{row['name']:>14}: {shown or row['error']}")


if __name__ == "__main__":
    main()
