"""Where datasets live: the data-directory setting shared by every loader.

Loaders name each dataset's canonical source and read a local copy from the data
directory, which is, in order: the ``data_dir`` argument a loader is given, the
``STRUCTNETS_DATA_DIR`` environment variable, or ``~/.cache/structnets/data``. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["data_dir", "dataset_path", "check_finite"]

ENVIRONMENT_VARIABLE = "STRUCTNETS_DATA_DIR"


def data_dir(override: str | Path | None = None) -> Path:
    """The data directory: ``override``, else ``$STRUCTNETS_DATA_DIR``, else the user cache."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENVIRONMENT_VARIABLE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "structnets" / "data"


def dataset_path(name: str, filename: str, canonical_url: str, override: str | Path | None = None) -> Path:
    """Path of ``filename`` of dataset ``name``; a clear error if the local copy is missing."""
    path = data_dir(override) / name / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. Download {name} from {canonical_url} into {path.parent}, or point "
            f"{ENVIRONMENT_VARIABLE} (or --data-dir) at a directory that holds {name}/{filename}."
        )
    return path


def check_finite(values: Tensor, where: str) -> None:
    """Raises a ValueError naming ``where`` and the first rows holding NaN or infinity.

    For data that readers take in; it synchronises with the device, so models do not call
    it in their hot path.
    """
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(values.shape[0], -1).any(1) if values.dim() else bad.view(1)).view(-1)
        shown = ", ".join(str(r) for r in rows[:5].tolist()) + (" ..." if rows.numel() > 5 else "")
        kinds = sorted({"NaN" if v != v else "infinity" for v in values[bad][:20].tolist()})
        raise ValueError(f"{where}: {' and '.join(kinds)} in row(s) {shown} ({rows.numel()} row(s) in all)")
