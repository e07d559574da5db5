"""The one training engine, checkpoints and run directories, distributed set-up, the data directory.

Every task is data + a model + metrics + one call of :func:`fit`; what every task needs
(clipping, learning-rate schedules, the time budget, early stopping with the best weights,
EMA, resume, DDP under torchrun, progress, seeding) lives here once.
"""

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    RunDirectory,
    atomic_write,
    load_checkpoint,
    load_model,
    open_run,
    save_checkpoint,
)
from .config import add_arguments, from_args, from_dict, to_dict
from .data import CsvRecord, CsvTable, check_finite, data_dir, dataset_path, read_csv, read_text
from .distributed import World, decide, distributed, shard, world
from .engine import LRSchedule, StopReason, TrainConfig, TrainResult, clip_gradients, fit, lr_factor, seed_everything

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "RunDirectory",
    "atomic_write",
    "load_checkpoint",
    "load_model",
    "open_run",
    "save_checkpoint",
    "add_arguments",
    "from_args",
    "from_dict",
    "to_dict",
    "CsvRecord",
    "CsvTable",
    "check_finite",
    "read_csv",
    "read_text",
    "data_dir",
    "dataset_path",
    "World",
    "decide",
    "distributed",
    "shard",
    "world",
    "LRSchedule",
    "StopReason",
    "TrainConfig",
    "TrainResult",
    "clip_gradients",
    "fit",
    "lr_factor",
    "seed_everything",
]
