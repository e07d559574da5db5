"""Molecular property prediction with the MPNN: training, evaluation, prediction, CLI.

``structnets molprop train`` reads molecules (a CSV with a SMILES column, or a named
dataset), featurises them with rdkit, splits them, standardises each regression target on
the training split, trains :class:`structnets.models.MPNN` with early stopping on the
validation loss, and writes to ``--out``:

* ``metrics.json``: per split (train/val/test) and target, RMSE, MAE and R^2 in the
  target's own units (accuracy and ROC-AUC for classification);
* ``model.pt``: a checkpoint that loads with ``weights_only=True`` and carries everything
  needed to rebuild the model and its featuriser;
* ``predictions.csv`` and ``parity.png``.

``structnets molprop predict`` writes one output row per input row, in order, with an
``error`` column for molecules it could not featurise.

Training also runs across processes under ``torchrun`` (DistributedDataParallel, gloo on
CPU, nccl on GPU); rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import enum
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.swa_utils import get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ..models import MPNN, MPNNConfig
from ..train.checkpoint import clip_gradients, load_checkpoint
from . import (
    FeaturizerConfig,
    MoleculeDataset,
    MoleculeError,
    QM9Source,
    atom_feature_names,
    atom_feature_size,
    bond_feature_size,
    graph_from_smiles,
    load_esol,
    load_freesolv,
    load_lipophilicity,
    load_qm9,
    random_split,
    read_molecule_csv,
    read_split_json,
    scaffold_split,
    sized_split,
)

logger = logging.getLogger(__name__)

__all__ = ["Task", "Schedule", "SplitKind", "MolpropConfig", "train", "predict", "register"]

SPLITS = ("train", "val", "test")


class Task(enum.Enum):
    REGRESSION = "regression"
    CLASSIFICATION = "classification"


class Schedule(enum.Enum):
    """Learning-rate schedules: chemprop's warm-up then exponential decay, or decay on plateau."""

    WARMUP_DECAY = "warmup-decay"
    PLATEAU = "plateau"


class SplitKind(enum.Enum):
    RANDOM = "random"
    SCAFFOLD = "scaffold"


def _load_qm9_full(**kwargs: Any) -> MoleculeDataset:
    return load_qm9(source=QM9Source.QM9PACK, **kwargs)


def _load_qm9_subset(**kwargs: Any) -> MoleculeDataset:
    return load_qm9(source=QM9Source.SUBSET, **kwargs)


#: Named datasets. ``qm9`` is the full set, read from the installed ``qm9pack`` package;
#: ``qm9-subset`` the 5,000-molecule subset in the data directory.
DATASETS = {
    "esol": load_esol,
    "freesolv": load_freesolv,
    "lipophilicity": load_lipophilicity,
    "qm9": _load_qm9_full,
    "qm9-subset": _load_qm9_subset,
}
_QM9_DATASETS = frozenset({"qm9", "qm9-subset"})


@dataclasses.dataclass(frozen=True)
class MolpropConfig:
    """One training run. Sizes default to Gilmer et al.'s shape, scaled for a CPU.

    The defaults (hidden 32, edge hidden 64, readout 128, batch 50, Adam 1e-3 with decay on
    plateau, the summed-state read-out beside Set2Set) were chosen by validation RMSE on
    ESOL and FreeSolv (random 0.8/0.1/0.1 split, 50 epochs): wider models overfit these
    small sets and cost more time, and the summed read-out lowers ESOL's error the most.
    """

    data: str | None = None
    dataset: str | None = None
    smiles_column: str = "smiles"
    target_columns: tuple[str, ...] = ()
    data_dir: str | None = None
    limit: int | None = None
    sample: int | None = None
    task: Task = Task.REGRESSION
    split: SplitKind = SplitKind.RANDOM
    split_indices: str | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_sizes: tuple[int, int] | None = None
    composition_baseline: bool | None = None
    qm9_npz: str | None = None
    distance_bins: int | None = None
    max_seconds: float | None = None
    workers: int | None = None
    ema_decay: float = 0.0
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
    epochs: int = 50
    batch_size: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.PLATEAU
    warmup_epochs: float = 2.0
    final_lr_ratio: float = 0.1
    patience: int = 20
    grad_clip_norm: float | None = 10.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if (self.data is None) == (self.dataset is None):
            raise ValueError("give exactly one of --data FILE.csv and --dataset NAME")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.data is not None and not self.target_columns:
            raise ValueError("--data needs at least one --target-column")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        if self.distance_bins is not None and self.distance_bins > 0 and not self.distances:
            raise ValueError("--distance-bins expands the distance feature: it needs --distances")
        if self.qm9_npz is not None and self.dataset not in _QM9_DATASETS:
            raise ValueError("--qm9-npz replaces the source of --dataset qm9; it does not apply to other data")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"sample must be positive, got {self.sample}")
        if self.split_sizes is not None and (len(self.split_sizes) != 2 or min(self.split_sizes) < 1):
            raise ValueError(f"split sizes must be two positive counts (train, val), got {self.split_sizes}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {self.fractions}")

    @property
    def bins(self) -> int:
        """Gaussians per distance: 16 by default when distances are features, else none."""
        if self.distance_bins is not None:
            return self.distance_bins
        return 16 if self.distances else 0

    @property
    def uses_baseline(self) -> bool:
        """Whether targets are fitted on composition first: by default for every regression."""
        if self.task is Task.CLASSIFICATION:
            return False
        return True if self.composition_baseline is None else self.composition_baseline

    @property
    def featurizer(self) -> FeaturizerConfig:
        return FeaturizerConfig(
            explicit_hydrogens=self.explicit_hydrogens, distances=self.distances, complete_graph=self.complete_graph
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["task"], out["split"], out["schedule"] = self.task.value, self.split.value, self.schedule.value
        out["target_columns"], out["fractions"] = list(self.target_columns), list(self.fractions)
        out["split_sizes"] = None if self.split_sizes is None else list(self.split_sizes)
        return out


# ---------------------------------------------------------------------------- distributed
@dataclasses.dataclass(frozen=True)
class _Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def _distributed(device: torch.device) -> Iterator[_Distributed]:
    """Joins the torchrun process group when launched by torchrun, else a no-op."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield _Distributed()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    try:
        yield _Distributed(torch.distributed.get_rank(), world_size)
    finally:
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------- data
def load_dataset(config: MolpropConfig) -> MoleculeDataset:
    if config.dataset is not None:
        loader = DATASETS[config.dataset]
        kwargs: dict[str, Any] = {"data_dir": config.data_dir, "config": config.featurizer}
        if config.limit is not None:
            kwargs["limit"] = config.limit
        if config.dataset in _QM9_DATASETS and config.qm9_npz is not None:
            kwargs["path"] = config.qm9_npz
        if config.dataset in _QM9_DATASETS and config.workers is not None:
            kwargs["workers"] = config.workers
        if config.dataset in _QM9_DATASETS and config.sample is not None:
            # Drawn before featurisation: a few thousand molecules of QM9 load in seconds.
            kwargs.update(sample=config.sample, seed=config.seed)
        dataset = loader(**kwargs)
        if config.dataset not in _QM9_DATASETS and config.sample is not None:
            dataset = _subsample(dataset, config.sample, config.seed)
        if config.target_columns:
            missing = [t for t in config.target_columns if t not in dataset.target_names]
            if missing:
                raise ValueError(
                    f"{config.dataset} has no target {missing[0]!r}; it has {', '.join(dataset.target_names)}"
                )
            keep = [dataset.target_names.index(t) for t in config.target_columns]
            dataset = dataclasses.replace(
                dataset, targets=dataset.targets[:, keep], target_names=list(config.target_columns)
            )
        return dataset
    dataset = read_molecule_csv(
        Path(config.data),
        config.smiles_column,
        list(config.target_columns),
        config.featurizer,
        skip_invalid=config.skip_invalid,
    )
    return dataset if config.sample is None else _subsample(dataset, config.sample, config.seed)


def _subsample(dataset: MoleculeDataset, sample: int, seed: int) -> MoleculeDataset:
    """``sample`` molecules drawn at random (``seed``), kept in file order."""
    if sample > len(dataset):
        raise ValueError(f"cannot sample {sample} molecules out of the {len(dataset)} read")
    keep = sorted(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:sample].tolist())
    return dataclasses.replace(
        dataset,
        smiles=[dataset.smiles[i] for i in keep],
        graphs=[dataset.graphs[i] for i in keep],
        targets=dataset.targets[keep],
        rows=[dataset.rows[i] for i in keep],
    )


def make_split(config: MolpropConfig, dataset: MoleculeDataset) -> dict[str, list[int]]:
    if config.split_indices is not None:
        return read_split_json(Path(config.split_indices), len(dataset))
    if config.split_sizes is not None:
        if config.split is SplitKind.SCAFFOLD:
            raise ValueError("--split-sizes makes a random split; it cannot be combined with --split scaffold")
        return sized_split(len(dataset), *config.split_sizes, seed=config.seed)
    if config.split is SplitKind.SCAFFOLD:
        return scaffold_split(dataset.smiles, config.fractions, seed=config.seed)
    return random_split(len(dataset), config.fractions, seed=config.seed)


def composition(graphs: Sequence, featurizer: FeaturizerConfig) -> Tensor:
    """``[num_graphs, elements + 2]``: each molecule's atom count per element slot (hydrogens
    included, whether or not they are graph nodes), and a column of ones.

    Read from the featurised atoms, so it needs no second pass through rdkit.
    """
    names = atom_feature_names(featurizer)
    elements = [k for k, n in enumerate(names) if n.startswith("element=")]
    hydrogen_slot = names.index("element=H") if "element=H" in names else None
    hydrogen_counts = [
        (k, float(n.split("=")[1].rstrip("+"))) for k, n in enumerate(names) if n.startswith("hydrogens=")
    ]
    out = torch.zeros(len(graphs), len(elements) + 2, dtype=torch.float64)
    if not graphs:
        return out
    x = torch.cat([graph.x for graph in graphs]).to(torch.float64)
    per_atom = torch.zeros(x.shape[0], out.shape[1], dtype=torch.float64)
    per_atom[:, : len(elements)] = x[:, elements]
    if not featurizer.explicit_hydrogens:
        # Hydrogens live in the heavy atoms' hydrogen-count one-hot; an explicit
        # hydrogen atom would be counted twice, once as a node and once there.
        slots, counts = zip(*hydrogen_counts)
        column = elements.index(hydrogen_slot) if hydrogen_slot is not None else len(elements)
        per_atom[:, column] += x[:, list(slots)] @ torch.tensor(counts, dtype=torch.float64)
    graph_of_atom = torch.repeat_interleave(torch.arange(len(graphs)), torch.tensor([g.x.shape[0] for g in graphs]))
    out.index_add_(0, graph_of_atom, per_atom)
    out[:, -1] = 1.0
    return out


@dataclasses.dataclass(frozen=True)
class Scaler:
    """Per-target standardisation fitted on the training split (identity for classification).

    With ``baseline`` set, a linear model of the molecule's composition (atoms per element,
    plus a constant) is fitted on the training split first, and the network learns the
    standardised remainder. Extensive properties such as QM9's total energies (standard
    deviation ~10 eV, almost all of it from the atom counts) then leave the network only
    the part that depends on the structure, like the per-element reference energies of
    SchNet and others.
    """

    mean: Tensor
    std: Tensor
    baseline: Tensor | None = None  # [elements + 2, targets]

    @classmethod
    def fit(cls, targets: Tensor, task: Task, counts: Tensor | None = None) -> Scaler:
        if task is Task.CLASSIFICATION:
            return cls(torch.zeros(targets.shape[1]), torch.ones(targets.shape[1]))
        baseline = None
        if counts is not None:
            # Least squares, minimum-norm: an element absent from training gets coefficient 0.
            # No ridge penalty: on additive targets such as total energies (~1,000 eV per
            # carbon) any shrinkage of a rare element's coefficient costs that much error.
            baseline = torch.linalg.lstsq(counts, targets.to(torch.float64), driver="gelsd").solution
            targets = targets - (counts @ baseline).to(targets.dtype)
        std = targets.std(0, unbiased=False)
        return cls(targets.mean(0), torch.where(std > 0, std, torch.ones_like(std)), baseline)

    def _offset(self, y: Tensor, counts: Tensor | None) -> Tensor:
        if self.baseline is None:
            return self.mean.to(y)
        if counts is None:
            raise ValueError("this scaler has a composition baseline: pass the molecules' composition")
        return (counts @ self.baseline).to(y) + self.mean.to(y)

    def transform(self, y: Tensor, counts: Tensor | None = None) -> Tensor:
        return (y - self._offset(y, counts)) / self.std.to(y)

    def inverse(self, y: Tensor, counts: Tensor | None = None) -> Tensor:
        return y * self.std.to(y) + self._offset(y, counts)


# ---------------------------------------------------------------------------- metrics
def _roc_auc(scores: Tensor, labels: Tensor) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties get average ranks); NaN with one class."""
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores, dtype=torch.double)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2
    ranks[order] = average[inverse]
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def regression_metrics(pred: Tensor, true: Tensor, names: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {}
    for k, name in enumerate(names):
        error = pred[:, k] - true[:, k]
        total = ((true[:, k] - true[:, k].mean()) ** 2).sum()
        out[name] = {
            "rmse": float(error.pow(2).mean().sqrt()),
            "mae": float(error.abs().mean()),
            "r2": float(1 - error.pow(2).sum() / total) if total > 0 else float("nan"),
        }
    return out


def classification_metrics(logits: Tensor, true: Tensor, names: Sequence[str]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "accuracy": float(((logits[:, k] > 0).float() == true[:, k]).float().mean()),
            "roc_auc": _roc_auc(logits[:, k], true[:, k]),
        }
        for k, name in enumerate(names)
    }


# ---------------------------------------------------------------------------- training
def build_model(config: MolpropConfig, num_targets: int) -> MPNN:
    featurizer = config.featurizer
    return MPNN(
        MPNNConfig(
            atom_features=atom_feature_size(featurizer),
            bond_features=bond_feature_size(featurizer),
            num_targets=num_targets,
            hidden_size=config.hidden_size,
            rounds=config.rounds,
            edge_hidden_size=config.edge_hidden_size,
            set2set_steps=config.set2set_steps,
            readout_hidden_size=config.readout_hidden_size,
            dropout=config.dropout,
            sum_readout=config.sum_readout,
            distance_bins=config.bins,
            # Bonded atoms sit 0.9-1.9 A apart; a complete graph's pairs reach ~9 A in QM9.
            distance_cutoff=8.0 if config.complete_graph else 3.0,
        )
    )


def _loss(output: Tensor, target: Tensor, task: Task) -> Tensor:
    if task is Task.CLASSIFICATION:
        return F.binary_cross_entropy_with_logits(output, target)
    return F.mse_loss(output, target)


@dataclasses.dataclass(frozen=True)
class _Batch:
    """The fields of a torch_geometric ``Batch`` that training reads."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor
    y: Tensor
    num_graphs: int

    def to(self, device: torch.device) -> _Batch:
        return _Batch(
            self.x.to(device),
            self.edge_index.to(device),
            self.edge_attr.to(device),
            self.batch.to(device),
            self.y.to(device),
            self.num_graphs,
        )


class _PackedGraphs:
    """Graphs concatenated once, so that a batch is a few vectorised gathers.

    torch_geometric's collate walks every graph and attribute in Python, which on the small
    molecular datasets costs about as much as the model's forward pass.
    """

    def __init__(self, graphs: list) -> None:
        self.x = torch.cat([g.x for g in graphs])
        self.edge_attr = torch.cat([g.edge_attr for g in graphs])
        # Graphs to predict for carry no targets.
        has_y = all(getattr(g, "y", None) is not None for g in graphs)
        self.y = torch.cat([g.y for g in graphs]) if has_y and graphs else torch.zeros(len(graphs), 0)
        self.nodes = torch.tensor([g.num_nodes for g in graphs])
        self.edges = torch.tensor([g.edge_index.shape[1] for g in graphs])
        self.node_start = torch.cumsum(self.nodes, 0) - self.nodes
        self.edge_start = torch.cumsum(self.edges, 0) - self.edges
        # Each graph's edge_index numbers its own nodes from 0; batching offsets them.
        self.local_edges = torch.cat([g.edge_index for g in graphs], 1)

    @staticmethod
    def _ranges(starts: Tensor, counts: Tensor) -> Tensor:
        """The concatenation of ``arange(s, s + c)`` for each start and count."""
        offsets = torch.cumsum(counts, 0) - counts
        return torch.repeat_interleave(starts - offsets, counts) + torch.arange(int(counts.sum()))

    def batch(self, chosen: Tensor) -> _Batch:
        nodes, edges = self.nodes[chosen], self.edges[chosen]
        node_ids = self._ranges(self.node_start[chosen], nodes)
        edge_ids = self._ranges(self.edge_start[chosen], edges)
        new_start = torch.cumsum(nodes, 0) - nodes
        edge_index = self.local_edges[:, edge_ids] + torch.repeat_interleave(new_start, edges)
        graph_of_node = torch.repeat_interleave(torch.arange(len(chosen)), nodes)
        return _Batch(
            self.x[node_ids], edge_index, self.edge_attr[edge_ids], graph_of_node, self.y[chosen], len(chosen)
        )


# Molecules per evaluation batch: large batches amortise per-batch overhead on CPUs.
_EVAL_BATCH = 512


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: MolpropConfig, batches_per_epoch: int
) -> tuple[bool, Any]:
    """``(steps_per_batch, scheduler)`` for ``config.schedule``.

    Warm-up-decay is chemprop's Noam-like schedule: the rate rises linearly from
    ``final_lr_ratio * lr`` to ``lr`` over ``warmup_epochs``, then decays exponentially to
    ``final_lr_ratio * lr`` at the last epoch. It is stepped per batch; plateau per epoch.
    """
    if config.schedule is Schedule.PLATEAU:
        return False, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.7, patience=5, min_lr=1e-5)
    warmup = max(1, round(config.warmup_epochs * batches_per_epoch))
    total = max(warmup + 1, config.epochs * batches_per_epoch)
    low = config.final_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return low + (1 - low) * step / warmup
        return low ** ((step - warmup) / (total - warmup))

    return True, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def _predict_batches(model: nn.Module, batches: list) -> Tensor:
    model.eval()
    outputs = [_unwrap(model).forward_batch(batch).cpu() for batch in batches]
    return torch.cat(outputs) if outputs else torch.zeros(0, _unwrap(model).config.num_targets)


@torch.no_grad()
def _predict_graphs(model: nn.Module, graphs: list, batch_size: int, device: torch.device) -> Tensor:
    model.eval()
    outputs = []
    packed = _PackedGraphs(graphs) if graphs else None
    for chosen in torch.arange(len(graphs)).split(batch_size):
        outputs.append(_unwrap(model).forward_batch(packed.batch(chosen).to(device)).cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0, _unwrap(model).config.num_targets)


def _unwrap(model: nn.Module) -> MPNN:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _out_of_time(started: float, budget: float, device: torch.device, dist: _Distributed) -> bool:
    """Whether the budget is spent; under DDP rank 0 decides for all, so that all stop together."""
    spent = torch.tensor([float(time.perf_counter() - started >= budget)], device=device)
    if dist.world_size > 1:
        torch.distributed.broadcast(spent, 0)
    return bool(spent.item())


def train(config: MolpropConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Trains, evaluates and writes the run's outputs; returns the metrics."""
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    dataset = load_dataset(config)
    split = make_split(config, dataset)
    if not split["train"] or not split["val"]:
        raise ValueError(f"the split leaves no molecules for training or validation ({len(dataset)} molecules)")
    names = list(dataset.target_names)
    targets = dataset.targets
    counts = composition(dataset.graphs, config.featurizer) if config.uses_baseline else None
    scaler = Scaler.fit(targets[split["train"]], config.task, None if counts is None else counts[split["train"]])
    scaled = scaler.transform(targets, counts)
    graphs = []
    for index, graph in enumerate(dataset.graphs):
        graph = graph.clone()
        graph.y = scaled[index : index + 1]
        graphs.append(graph)

    with _distributed(device) as dist:
        model = build_model(config, len(names)).to(device)
        # An exponential moving average of the weights (torch's AveragedModel) is what gets
        # validated and kept: on small data sets it evens out the step-to-step noise that
        # picking the best epoch on a few dozen validation molecules would otherwise chase.
        averaged = (
            torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
            if config.ema_decay > 0
            else None
        )
        if dist.world_size > 1:
            model = nn.parallel.DistributedDataParallel(model)
        # foreach: one kernel per step for all parameters; the per-tensor default costs
        # a noticeable share of a small model's step on CPUs.
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
        train_graphs = [graphs[i] for i in split["train"]]
        sampler = None
        if dist.world_size > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(train_graphs, seed=config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        packed = _PackedGraphs(train_graphs)
        batches_per_epoch = math.ceil((len(sampler) if sampler is not None else len(train_graphs)) / config.batch_size)
        per_batch, scheduler = _make_scheduler(optimizer, config, batches_per_epoch)
        # The validation set is collated once: re-collating it every epoch costs as much as
        # evaluating it.
        val_packed = _PackedGraphs([graphs[i] for i in split["val"]])
        val_batches = [
            val_packed.batch(chosen).to(device) for chosen in torch.arange(len(split["val"])).split(_EVAL_BATCH)
        ]
        val_targets = scaled[split["val"]]
        best_val, best_state, best_epoch, stale, history = math.inf, None, 0, 0, []
        stopped_by_time = False
        bar = tqdm(range(1, config.epochs + 1), desc="molprop", disable=not (progress and dist.main), unit="epoch")
        for epoch in bar:
            if sampler is not None:
                sampler.set_epoch(epoch)
            model.train()
            total, count = 0.0, 0
            order = (
                torch.tensor(list(sampler))
                if sampler is not None
                else torch.randperm(len(train_graphs), generator=generator)
            )
            for chosen in order.split(config.batch_size):
                batch = packed.batch(chosen).to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = _loss(
                    model(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs),
                    batch.y,
                    config.task,
                )
                loss.backward()
                clip_gradients(model, config.grad_clip_norm)
                optimizer.step()
                if averaged is not None:
                    averaged.update_parameters(_unwrap(model))
                if per_batch:
                    scheduler.step()
                total += loss.item() * batch.num_graphs
                count += batch.num_graphs
            evaluated = model if averaged is None else averaged.module
            val_out = _predict_batches(evaluated, val_batches)
            val_loss = float(_loss(val_out, val_targets, config.task))
            if not per_batch:
                scheduler.step(val_loss)
            history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss})
            bar.set_postfix(train=f"{total / max(count, 1):.4f}", val=f"{val_loss:.4f}")
            if val_loss < best_val:
                best_val, best_epoch, stale = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in _unwrap(evaluated).state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    logger.info("early stopping at epoch %d (best %d)", epoch, best_epoch)
                    break
            if config.max_seconds is not None and _out_of_time(started, config.max_seconds, device, dist):
                logger.warning("stopping after epoch %d: the %.0f s time budget is spent", epoch, config.max_seconds)
                stopped_by_time = True
                break
        if best_state is not None:
            _unwrap(model).load_state_dict(best_state)
        if not dist.main:
            return {}
        predictions = {
            name: scaler.inverse(
                _predict_graphs(model, [graphs[i] for i in split[name]], _EVAL_BATCH, device),
                None if counts is None else counts[split[name]],
            )
            if config.task is Task.REGRESSION
            else _predict_graphs(model, [graphs[i] for i in split[name]], _EVAL_BATCH, device)
            for name in SPLITS
        }
    metrics_fn = regression_metrics if config.task is Task.REGRESSION else classification_metrics
    metrics: dict[str, Any] = {
        name: metrics_fn(predictions[name], targets[split[name]], names) if split[name] else {} for name in SPLITS
    }
    metrics.update(
        best_epoch=best_epoch,
        epochs_run=len(history),
        stopped_by_time_budget=stopped_by_time,
        train_seconds=time.perf_counter() - started,
        num_molecules={name: len(split[name]) for name in SPLITS},
        skipped_rows=[list(s) for s in dataset.skipped],
        history=history,
        config=config.to_dict(),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    torch.save(
        {
            "state_dict": _unwrap(model).state_dict(),
            "config": config.to_dict(),
            "model_config": dataclasses.asdict(_unwrap(model).config),
            "target_names": names,
            "scaler_mean": scaler.mean,
            "scaler_std": scaler.std,
            "scaler_baseline": scaler.baseline,
        },
        out_dir / "model.pt",
    )
    _write_predictions(out_dir / "predictions.csv", dataset, split, predictions, names)
    _parity_plot(out_dir / "parity.png", predictions, {n: targets[split[n]] for n in SPLITS}, names, config.task)
    return metrics


def _write_predictions(path: Path, dataset: MoleculeDataset, split, predictions, names) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "row", "smiles"] + [f"{n}_true" for n in names] + [f"{n}_pred" for n in names])
        for name in SPLITS:
            for k, index in enumerate(split[name]):
                writer.writerow(
                    [name, dataset.rows[index], dataset.smiles[index]]
                    + [f"{float(v):.6g}" for v in dataset.targets[index]]
                    + [f"{float(v):.6g}" for v in predictions[name][k]]
                )


def _parity_plot(path: Path, predictions, truths, names, task: Task) -> None:
    # A bare Figure on the Agg canvas: importing pyplot costs about half a second of start-up.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(len(names), 4)
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(4 * columns, 4 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // columns][k % columns]
        for split_name, colour in zip(SPLITS, ("#bbbbbb", "#1f77b4", "#d62728")):
            if len(truths[split_name]):
                ax.scatter(
                    truths[split_name][:, k], predictions[split_name][:, k], s=6, c=colour, label=split_name, alpha=0.7
                )
        low = min(float(t[:, k].min()) for t in truths.values() if len(t))
        high = max(float(t[:, k].max()) for t in truths.values() if len(t))
        if task is Task.REGRESSION:
            ax.plot([low, high], [low, high], "k--", lw=1)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}" if task is Task.REGRESSION else f"logit {name}")
        ax.legend(loc="upper left", fontsize=8)
    for k in range(len(names), rows * columns):
        axes[k // columns][k % columns].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------- prediction
def load_model(model_dir: Path, device: str = "cpu") -> tuple[MPNN, MolpropConfig, Scaler, list[str]]:
    checkpoint = load_checkpoint(Path(model_dir) / "model.pt", map_location=device)
    raw = dict(checkpoint["config"])
    raw["task"], raw["split"] = Task(raw["task"]), SplitKind(raw["split"])
    raw["schedule"] = Schedule(raw.get("schedule", Schedule.PLATEAU.value))
    raw["target_columns"], raw["fractions"] = tuple(raw["target_columns"]), tuple(raw["fractions"])
    if raw.get("split_sizes") is not None:
        raw["split_sizes"] = tuple(raw["split_sizes"])
    config = MolpropConfig(**raw)
    model = MPNN(MPNNConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return (
        model.to(device).eval(),
        config,
        Scaler(checkpoint["scaler_mean"], checkpoint["scaler_std"], checkpoint.get("scaler_baseline")),
        checkpoint["target_names"],
    )


def predict(model_dir: Path, data: Path, smiles_column: str, out: Path, batch_size: int = 64) -> int:
    """Predicts every row of ``data``; returns the number of rows that could not be featurised.

    ``out`` has the input's rows in order, all of its columns, then ``<target>_pred`` per
    target and ``error`` (empty, or why the row's SMILES could not be featurised).
    """
    model, config, scaler, names = load_model(model_dir)
    if config.distances or config.complete_graph:
        raise ValueError(
            f"{model_dir} was trained on 3D inputs (distances or the complete graph), and predict reads SMILES, "
            "which carry no geometry; train without --distances/--complete-graph to predict from SMILES"
        )
    with Path(data).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or smiles_column not in reader.fieldnames:
            raise ValueError(f"{data}: no column {smiles_column!r}; columns are {', '.join(reader.fieldnames or [])}")
        rows = list(reader)
    graphs, errors = [], []
    for row in rows:
        try:
            graphs.append(graph_from_smiles(row[smiles_column], config.featurizer))
            errors.append("")
        except MoleculeError as error:
            graphs.append(None)
            errors.append(str(error))
    good = [g for g in graphs if g is not None]
    outputs = _predict_graphs(model, good, batch_size, torch.device("cpu")) if good else torch.zeros(0, len(names))
    if config.task is Task.REGRESSION:
        outputs = scaler.inverse(outputs, composition(good, config.featurizer) if config.uses_baseline else None)
    else:
        outputs = torch.sigmoid(outputs)
    columns = list(reader.fieldnames)
    added = [f"{name}_pred" for name in names] + ["error"]
    clashes = [c for c in added if c in columns]
    if clashes:
        raise ValueError(f"{data}: the input already has column(s) {clashes}, which predict writes")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        # Every input column is carried through, in order, beside the predictions.
        writer = csv.writer(handle)
        writer.writerow(columns + added)
        values = iter(outputs.tolist())
        for row, graph, error in zip(rows, graphs, errors):
            predicted = [f"{v:.6g}" for v in next(values)] if graph is not None else [""] * len(names)
            writer.writerow([row[c] for c in columns] + predicted + [error])
    return sum(1 for e in errors if e)


# ---------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("molprop", help="molecular property prediction with the MPNN")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    tr = actions.add_parser("train", help="train an MPNN and write metrics, checkpoint, predictions and a parity plot")
    source = tr.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="CSV file with a SMILES column and target columns")
    source.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        help="a named dataset: esol, freesolv, lipophilicity and qm9-subset are read from the data directory, "
        "qm9 (all 130,831 molecules) from the installed qm9pack package",
    )
    tr.add_argument("--smiles-column", default="smiles")
    tr.add_argument("--target-column", action="append", default=[], dest="target_columns")
    tr.add_argument("--data-dir", help="data directory (default: $STRUCTNETS_DATA_DIR)")
    tr.add_argument("--limit", type=int, help="use the first N molecules of a named dataset")
    tr.add_argument(
        "--sample", type=int, help="use N molecules drawn at random (--seed); for QM9, drawn before featurisation"
    )
    tr.add_argument("--task", choices=[t.value for t in Task], default=Task.REGRESSION.value)
    tr.add_argument("--split", choices=[s.value for s in SplitKind], default=SplitKind.RANDOM.value)
    tr.add_argument(
        "--split-sizes",
        type=int,
        nargs=2,
        metavar=("TRAIN", "VAL"),
        help="random split with this many training and validation molecules, the rest test "
        "(Gilmer et al.'s QM9 split: 110000 10000)",
    )
    tr.add_argument("--split-indices", help='JSON file {"train": [...], "val": [...], "test": [...]} of row indices')
    tr.add_argument("--explicit-hydrogens", action="store_true")
    tr.add_argument("--distances", action="store_true", help="interatomic distances as edge features (3D data)")
    tr.add_argument("--complete-graph", action="store_true", help="every atom pair an edge (3D data)")
    tr.add_argument("--skip-invalid", action="store_true", help="skip and report invalid rows instead of failing")
    for name, kind, default in [
        ("epochs", int, 50),
        ("batch-size", int, 50),
        ("lr", float, 1e-3),
        ("hidden-size", int, 32),
        ("rounds", int, 3),
        ("edge-hidden-size", int, 64),
        ("set2set-steps", int, 3),
        ("readout-hidden-size", int, 128),
        ("dropout", float, 0.0),
        ("weight-decay", float, 0.0),
        ("warmup-epochs", float, 2.0),
        ("final-lr-ratio", float, 0.1),
        ("patience", int, 20),
        ("ema-decay", float, 0.0),
        ("seed", int, 0),
    ]:
        tr.add_argument(f"--{name}", type=kind, default=default)
    tr.add_argument(
        "--sum-readout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also read out the sum of node states (Set2Set alone is blind to molecule size)",
    )
    tr.add_argument(
        "--composition-baseline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fit each target on the atom counts per element first and learn the remainder (default: on for "
        "regression)",
    )
    tr.add_argument(
        "--distance-bins",
        type=int,
        default=None,
        help="Gaussians that expand each distance for the edge network (default 16 with --distances; 0: raw)",
    )
    tr.add_argument("--qm9-npz", help="with --dataset qm9: read this npz (structnets.chem.write_qm9_npz) instead")
    tr.add_argument(
        "--max-seconds", type=float, help="stop after the epoch that spends this many seconds; keeps the best so far"
    )
    tr.add_argument("--workers", type=int, help="processes that featurise QM9 (default: one per core for large reads)")
    tr.add_argument("--schedule", choices=[s.value for s in Schedule], default=Schedule.PLATEAU.value)
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--out", required=True, type=Path)
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train_cli)
    pr = actions.add_parser("predict", help="predict with a trained model; one output row per input row")
    pr.add_argument("--model", required=True, type=Path, help="a run directory written by molprop train")
    pr.add_argument("--data", required=True, type=Path)
    pr.add_argument("--smiles-column", default="smiles")
    pr.add_argument("--out", required=True, type=Path)
    pr.set_defaults(func=_predict_cli)
    return parser


def _train_cli(args: argparse.Namespace) -> int:
    # Every option is named after its config field; the few that need converting follow.
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(MolpropConfig) if hasattr(args, f.name)}
    config = MolpropConfig(
        **{
            **values,
            "target_columns": tuple(args.target_columns),
            "split_sizes": None if args.split_sizes is None else tuple(args.split_sizes),
            "task": Task(args.task),
            "split": SplitKind(args.split),
            "schedule": Schedule(args.schedule),
        }
    )
    metrics = train(config, args.out, progress=not args.no_progress)
    if metrics:
        for name, values in metrics["test"].items():
            shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            print(f"test {name}: {shown}")
        for row, value, reason in metrics["skipped_rows"]:
            print(f"skipped row {row} ({value!r}): {reason}")
        print(f"wrote {args.out}/metrics.json, model.pt, predictions.csv, parity.png")
    return 0


def _predict_cli(args: argparse.Namespace) -> int:
    failed = predict(args.model, args.data, args.smiles_column, args.out)
    print(f"wrote {args.out}" + (f" ({failed} row(s) could not be featurised; see the error column)" if failed else ""))
    return 0
