"""Training utilities shared by the tasks: gradient clipping, finite checks, checkpoints."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["clip_gradients", "check_finite", "save_checkpoint", "load_checkpoint"]


def clip_gradients(parameters: Iterable[nn.Parameter] | nn.Module, max_norm: float | None) -> float:
    """Rescales gradients so that their global L2 norm is at most ``max_norm``.

    Gradient-norm clipping (Pascanu et al. 2013) keeps one exploding step of backprop
    through time from wrecking the weights; it is torch's own ``clip_grad_norm_``.
    ``max_norm=None`` only measures. Returns the norm before clipping.
    """
    params = parameters.parameters() if isinstance(parameters, nn.Module) else parameters
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
    if max_norm <= 0 or not math.isfinite(max_norm):
        raise ValueError(f"max_norm must be a positive number, got {max_norm}")
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def check_finite(values: Tensor, where: str) -> None:
    """Raises a ValueError naming ``where`` and the first rows holding NaN or infinity.

    For data that loaders and the CLI read; it synchronises with the device, so models
    do not call it in their hot path.
    """
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(values.shape[0], -1).any(1) if values.dim() else bad.view(1)).view(-1)
        shown = ", ".join(str(r) for r in rows[:5].tolist()) + (" ..." if rows.numel() > 5 else "")
        kinds = sorted({"NaN" if v != v else "infinity" for v in values[bad][:20].tolist()})
        raise ValueError(f"{where}: {' and '.join(kinds)} in row(s) {shown} ({rows.numel()} row(s) in all)")


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any], **extra: Any) -> None:
    """Writes the state dict and the plain-data config needed to rebuild the model."""
    torch.save({"state_dict": model.state_dict(), "config": config, **extra}, Path(path))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint without executing code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
