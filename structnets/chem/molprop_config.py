"""The configuration of one molecule property run (``structnets molprop train``).

:class:`MolpropConfig` is a frozen dataclass: its fields are the command's flags (through
:mod:`structnets.train.config`, the help text from the ``Attributes:`` section below) and
what the checkpoint records. The engine's shared settings nest as ``train``; the learning
rate schedule is the task's own choice (:class:`Schedule`), turned into the engine's by
:func:`engine_config` once the number of batches per epoch is known.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from ..train.engine import LRSchedule, TrainConfig
from .descriptors import MoleculeFeaturizer
from .estimators import UncertaintyMethod
from .featurize import FeaturizerConfig
from .metrics import Task
from .sources import MoleculeSet, SplitKind
from .uncertainty import CalibrationMethod

__all__ = ["Schedule", "MolpropConfig", "training", "engine_config"]


class Schedule(enum.Enum):
    """Learning-rate schedules: chemprop's warm-up then exponential decay, or decay on plateau."""

    #: From ``final_lr_ratio * lr`` up to ``lr`` over ``warmup_epochs``, then exponentially
    #: down to ``final_lr_ratio * lr`` at the last epoch, stepped per batch.
    WARMUP_DECAY = "warmup-decay"
    #: ``lr`` times 0.7 after 5 epochs without a lower validation loss, down to ``plateau_min_lr``.
    PLATEAU = "plateau"


def training(**changes: Any) -> TrainConfig:
    """molprop's training defaults (the ``train`` of :class:`MolpropConfig`), with ``changes``.

    Example: ``MolpropConfig(dataset="esol", train=training(epochs=10, ema_decay=0.99))``.
    """
    defaults = TrainConfig(epochs=50, batch_size=50, lr=1e-3, patience=20, clip_grad_norm=10.0, plateau_min_lr=1e-5)
    return dataclasses.replace(defaults, **changes)


@dataclasses.dataclass(frozen=True)
class MolpropConfig:
    """One training run. Sizes default to Gilmer et al.'s shape, scaled for a CPU.

    The defaults (hidden 32, edge hidden 64, readout 128, batch 50, Adam 1e-3 with decay on
    plateau, the summed-state read-out beside Set2Set) were chosen by validation RMSE on
    ESOL and FreeSolv (random 0.8/0.1/0.1 split, 50 epochs): wider models overfit these
    small sets and cost more time, and the summed read-out lowers ESOL's error the most.

    Attributes:
        data: CSV file with a SMILES column and target columns.
        dataset: a named dataset: esol, freesolv, lipophilicity and qm9-subset are read from
            the data directory, qm9 (all 130,831 molecules) from the installed qm9pack package.
        smiles_columns: the CSV column(s) holding SMILES; several for rows of several molecules
            (a solute and a solvent, reactants), each read by its own encoder.
        shared_encoder: with several SMILES columns, one MPNN encoder for every column.
        molecule_featurizers: per-molecule features computed with rdkit and joined to the
            read-out: morgan_binary, morgan_count (radius 2, 2048 bits), rdkit_2d (rdkit's
            2D descriptors); v1_rdkit_2d_normalized is read as rdkit_2d. Counts and
            descriptors are standardised on the training split; a value rdkit cannot compute
            is replaced by the training split's median of its column.
        descriptors_path: user descriptors per data row (CSV with a header, .npz or .npy), joined
            to the read-out and standardised on the training split; NaN or infinity is an error.
        ensemble_size: models trained from different initialisations (seeds seed, seed+1, ...),
            averaged; their spread is the uncertainty.
        uncertainty_method: none, ensemble, mve (a variance head, Gaussian likelihood),
            evidential-total/-aleatoric/-epistemic (Amini et al.'s evidential regression) or
            dropout (Monte Carlo dropout at prediction); default: ensemble when ensemble_size > 1,
            else none.
        evidential_regularization: weight of the evidential regulariser (Soleimany et al.'s 0.2).
        uncertainty_dropout: dropout probability of Monte Carlo dropout at prediction.
        dropout_samples: forward passes of Monte Carlo dropout.
        calibration_method: recalibrate the uncertainty on the validation split: zscaling (one
            scale per target for the predicted standard deviation) or conformal-regression
            (intervals with calibration_coverage, normalised by the predicted standard deviation
            where there is one).
        calibration_coverage: the coverage the conformal intervals aim for.
        num_replicates: repeat the run on this many random splits (seeds seed, seed+1, ...) and
            report each metric's mean and standard deviation.
        target_columns: target columns to learn (repeat the flag for several); for a named
            dataset, all of its targets when none are given.
        data_dir: data directory; none for $STRUCTNETS_DATA_DIR (else ~/.cache/structnets/data).
        limit: use the first N molecules of a named dataset.
        sample: use N molecules drawn at random (seed); for QM9, drawn before featurisation.
        task: regression, or classification of 0/1 targets.
        split: random, or scaffold (no Bemis-Murcko scaffold in two splits).
        split_indices: JSON file {"train": [...], "val": [...], "test": [...]} of row indices.
        fractions: train, validation and test fractions of the split.
        split_sizes: random split with TRAIN VAL molecules, the rest test (Gilmer et al.'s QM9
            split: 110000 10000).
        composition_baseline: fit each regression target on the atom counts per element first
            and learn the remainder (never for classification).
        qm9_npz: with --dataset qm9: read this npz (structnets.chem.write_qm9_npz) instead.
        distance_bins: Gaussians that expand each distance for the edge network (none: 16 with
            --distances; 0: the raw distance).
        workers: processes that featurise QM9 (none: one per core for large reads).
        explicit_hydrogens: hydrogens as atoms rather than counts on the heavy atoms.
        distances: interatomic distances as edge features (3D data).
        complete_graph: every atom pair an edge (3D data).
        skip_invalid: skip and report invalid CSV rows instead of failing.
        hidden_size: node state size of the MPNN.
        rounds: message-passing rounds.
        edge_hidden_size: hidden width of the edge network.
        set2set_steps: processing steps of the Set2Set read-out.
        readout_hidden_size: hidden width of the output MLP.
        dropout: dropout before the output MLP's hidden layer.
        sum_readout: also read out the sum of node states (Set2Set alone is blind to molecule size).
        lr_schedule: learning-rate schedule: warmup-decay (chemprop's) or plateau.
        warmup_epochs: epochs of linear warm-up of the warmup-decay schedule.
        final_lr_ratio: first and last learning rate of the warmup-decay schedule, relative to lr.
        train: the engine's settings (epochs, batch size, lr, patience, EMA, time budget, device,
            seed...); its schedule fields are set from lr_schedule, warmup_epochs and final_lr_ratio.
    """

    data: str | None = dataclasses.field(default=None, metadata={"cli": False})
    dataset: MoleculeSet | None = dataclasses.field(default=None, metadata={"cli": False})
    smiles_columns: tuple[str, ...] = dataclasses.field(default=("smiles",), metadata={"aliases": ("--smiles-column",)})
    target_columns: tuple[str, ...] = dataclasses.field(default=(), metadata={"cli": False})
    data_dir: str | None = None
    limit: int | None = None
    sample: int | None = None
    task: Task = Task.REGRESSION
    split: SplitKind = SplitKind.RANDOM
    split_indices: str | None = dataclasses.field(default=None, metadata={"aliases": ("--splits-file",)})
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_sizes: tuple[int, int] | None = None
    composition_baseline: bool = True
    qm9_npz: str | None = None
    distance_bins: int | None = None
    workers: int | None = None
    explicit_hydrogens: bool = False
    distances: bool = False
    complete_graph: bool = False
    skip_invalid: bool = False
    hidden_size: int = 32
    rounds: int = 3
    edge_hidden_size: int = 64
    set2set_steps: int = 3
    readout_hidden_size: int = 128
    dropout: float = 0.0
    sum_readout: bool = True
    lr_schedule: Schedule = dataclasses.field(default=Schedule.PLATEAU, metadata={"aliases": ("--schedule",)})
    warmup_epochs: float = 2.0
    final_lr_ratio: float = 0.1
    shared_encoder: bool = dataclasses.field(default=False, metadata={"aliases": ("--mpn-shared",)})
    molecule_featurizers: tuple[MoleculeFeaturizer, ...] = dataclasses.field(
        default=(), metadata={"aliases": ("--features-generators",)}
    )
    descriptors_path: str | None = None
    ensemble_size: int = 1
    uncertainty_method: UncertaintyMethod | None = None
    evidential_regularization: float = dataclasses.field(default=0.2, metadata={"aliases": ("--v-kl",)})
    uncertainty_dropout: float = dataclasses.field(default=0.1, metadata={"aliases": ("--uncertainty-dropout-p",)})
    dropout_samples: int = dataclasses.field(default=10, metadata={"aliases": ("--dropout-sampling-size",)})
    calibration_method: CalibrationMethod | None = None
    calibration_coverage: float = 0.9
    num_replicates: int = 1
    train: TrainConfig = dataclasses.field(default_factory=training)

    def __post_init__(self) -> None:
        if (self.data is None) == (self.dataset is None):
            raise ValueError("give exactly one of --data FILE.csv and --dataset NAME")
        if isinstance(self.dataset, str):
            try:
                object.__setattr__(self, "dataset", MoleculeSet(self.dataset))
            except ValueError:
                known = ", ".join(m.value for m in MoleculeSet)
                raise ValueError(f"unknown dataset {self.dataset!r}; choose from {known}") from None
        object.__setattr__(self, "target_columns", tuple(self.target_columns))
        if isinstance(self.smiles_columns, str):
            object.__setattr__(self, "smiles_columns", (self.smiles_columns,))
        object.__setattr__(self, "smiles_columns", tuple(self.smiles_columns))
        object.__setattr__(self, "molecule_featurizers", tuple(map(MoleculeFeaturizer, self.molecule_featurizers)))
        if isinstance(self.uncertainty_method, str):
            object.__setattr__(self, "uncertainty_method", UncertaintyMethod(self.uncertainty_method))
        if isinstance(self.calibration_method, str):
            object.__setattr__(self, "calibration_method", CalibrationMethod.parse(self.calibration_method))
        self._check_uncertainty()
        if not self.smiles_columns or len(set(self.smiles_columns)) != len(self.smiles_columns):
            raise ValueError(f"--smiles-columns must name each column once, got {list(self.smiles_columns)}")
        if len(self.smiles_columns) > 1 and self.dataset is not None:
            raise ValueError(
                "several --smiles-columns need --data FILE.csv; the named datasets have one molecule a row"
            )
        if self.shared_encoder and len(self.smiles_columns) < 2:
            raise ValueError("--shared-encoder shares one encoder between several --smiles-columns; one is given")
        if len(self.smiles_columns) > 1 and (self.distances or self.complete_graph):
            raise ValueError("several molecules per row are read from SMILES, which carry no 3D geometry")
        if self.num_replicates < 1:
            raise ValueError(f"--num-replicates must be at least 1, got {self.num_replicates}")
        if self.num_replicates > 1 and (self.split_indices is not None or self.split_sizes is not None):
            raise ValueError("--num-replicates draws a new random split per replicate; it cannot take a fixed split")
        if self.data is not None and not self.target_columns:
            raise ValueError("--data needs at least one --target-column")
        if self.distance_bins is not None and self.distance_bins > 0 and not self.distances:
            raise ValueError("--distance-bins expands the distance feature: it needs --distances")
        if self.qm9_npz is not None and not (self.dataset is not None and self.dataset.is_qm9):
            raise ValueError("--qm9-npz replaces the source of --dataset qm9; it does not apply to other data")
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"sample must be positive, got {self.sample}")
        if self.sample is not None and self.split_indices is not None:
            raise ValueError("--split-indices names rows of the data; it cannot be combined with --sample")
        if len(set(self.target_columns)) != len(self.target_columns):
            twice = sorted({c for c in self.target_columns if self.target_columns.count(c) > 1})
            raise ValueError(f"--target-column {twice[0]!r} is given more than once; name each target once")
        if self.split_sizes is not None and (len(self.split_sizes) != 2 or min(self.split_sizes) < 1):
            raise ValueError(f"split sizes must be two positive counts (train, val), got {self.split_sizes}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {self.fractions}")
        if self.train.epochs is None:
            raise ValueError("molprop counts epochs: give epochs")
        if not 0 <= self.final_lr_ratio <= 1 or self.warmup_epochs < 0:
            raise ValueError("final_lr_ratio must lie in [0, 1] and warmup_epochs be >= 0")

    def _check_uncertainty(self) -> None:
        if self.ensemble_size < 1:
            raise ValueError(f"--ensemble-size must be at least 1, got {self.ensemble_size}")
        method = self.uncertainty
        if method is UncertaintyMethod.ENSEMBLE and self.ensemble_size < 2:
            raise ValueError("--uncertainty-method ensemble needs --ensemble-size 2 or more (a spread of members)")
        if method not in (UncertaintyMethod.NONE, UncertaintyMethod.ENSEMBLE) and self.task is not Task.REGRESSION:
            raise ValueError(
                f"--uncertainty-method {method.value} is for regression; classification gives probabilities"
            )
        if not 0 < self.uncertainty_dropout < 1 or self.dropout_samples < 2:
            raise ValueError("--uncertainty-dropout must lie in (0, 1) and --dropout-samples be at least 2")
        if self.calibration_method is not None:
            if self.task is not Task.REGRESSION:
                raise ValueError("--calibration-method calibrates regression uncertainty; the task is classification")
            if self.calibration_method is CalibrationMethod.ZSCALING and method is UncertaintyMethod.NONE:
                raise ValueError(
                    "--calibration-method zscaling rescales a predicted standard deviation: choose an "
                    "--uncertainty-method (or --ensemble-size 2 or more)"
                )
        if not 0 < self.calibration_coverage < 1:
            raise ValueError(f"--calibration-coverage must lie in (0, 1), got {self.calibration_coverage}")

    @property
    def uncertainty(self) -> UncertaintyMethod:
        """The uncertainty method: as given, else ensemble for several members, else none."""
        if self.uncertainty_method is not None:
            return self.uncertainty_method
        return UncertaintyMethod.ENSEMBLE if self.ensemble_size > 1 else UncertaintyMethod.NONE

    @property
    def smiles_column(self) -> str:
        """The first (for one molecule per row, the only) SMILES column."""
        return self.smiles_columns[0]

    @property
    def bins(self) -> int:
        """Gaussians per distance: 16 by default when distances are features, else none."""
        if self.distance_bins is not None:
            return self.distance_bins
        return 16 if self.distances else 0

    @property
    def uses_baseline(self) -> bool:
        """Whether targets are fitted on composition first: by default for every regression."""
        return self.task is Task.REGRESSION and self.composition_baseline

    @property
    def featurizer(self) -> FeaturizerConfig:
        return FeaturizerConfig(
            explicit_hydrogens=self.explicit_hydrogens, distances=self.distances, complete_graph=self.complete_graph
        )


def engine_config(config: MolpropConfig, steps_per_epoch: int) -> TrainConfig:
    """``config.train`` with the schedule of ``config.lr_schedule`` for epochs of ``steps_per_epoch``.

    The training loss is logged once per epoch (``log_every = steps_per_epoch``).
    """
    if config.lr_schedule is Schedule.PLATEAU:
        schedule = {"schedule": LRSchedule.PLATEAU, "warmup_steps": 0}
    else:
        schedule = {
            "schedule": LRSchedule.EXPONENTIAL,
            "warmup_steps": max(1, round(config.warmup_epochs * steps_per_epoch)),
            "min_lr_ratio": config.final_lr_ratio,
        }
    return dataclasses.replace(config.train, log_every=steps_per_epoch, **schedule)
