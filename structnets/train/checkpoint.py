"""One checkpoint schema and one run-directory schema for every task.

A checkpoint (``model.pt``) is a plain dict that loads with ``torch.load(weights_only=True)``,
so loading one never runs code::

    {"format": "structnets", "library_version": "0.2.0", "task": "molprop",
     "model_class": "MPNN", "model_config": {...}, "state_dict": {...},
     "task_config": {...}, "extra": {...}}

``model_class`` names a class exported by :mod:`structnets.models`; :func:`load_model` looks it
up there (nothing else is importable through a checkpoint) and rebuilds it from
``model_config`` with :func:`structnets.train.config.from_dict`.

A run directory holds one model and what belongs to it. :class:`RunDirectory` writes every
file atomically (a temporary file in the same directory, then ``os.replace``) and keeps
``run.json``: it says ``"incomplete"`` from the moment a run starts writing into the
directory, and ``"complete"``, with the SHA-256 of every file the run wrote, only after
the last of them is in place. So an interrupted run leaves the directory either as it was
(nothing written yet) or marked incomplete, never a new ``metrics.json`` beside an old
``model.pt``; and :func:`open_run` refuses an incomplete or inconsistent run with one line.
Timings go to ``timing.json``, apart from the results, so that a rerun with the same seed
writes identical result files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import from_dict, to_dict

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "RunDirectory",
    "open_run",
    "atomic_write",
]

FORMAT = "structnets"
RUN_FILE = "run.json"


class CheckpointError(ValueError):
    """A checkpoint or run directory that cannot be used; the message names the file."""


def _library_version() -> str:
    from .. import __version__

    return __version__


def atomic_write(path: str | Path, data: bytes | str, *, durable: bool = True) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename: all of it or nothing.

    ``durable`` also flushes the bytes to the disk before the rename (``fsync``), so that the
    file survives a power cut, not only a killed process; the engine's frequent resume state
    skips that cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` read: the schema's fields, the weights apart."""

    path: Path
    task: str
    model_class: str
    model_config: dict[str, Any]
    state_dict: dict[str, Any]
    task_config: dict[str, Any]
    extra: dict[str, Any]
    library_version: str


def _model_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise TypeError(f"{type(model).__name__} has no dataclass `config`; every structnets model keeps one")
    return config


def checkpoint_bytes(
    model: nn.Module, *, task: str, task_config: Any = None, extra: dict[str, Any] | None = None
) -> bytes:
    """The serialised checkpoint of ``model`` (see the module docstring for the schema)."""
    model = getattr(model, "module", model)  # DistributedDataParallel and AveragedModel wrap the model
    payload = {
        "format": FORMAT,
        "library_version": _library_version(),
        "task": task,
        "model_class": type(model).__name__,
        "model_config": to_dict(_model_config(model)),
        "state_dict": model.state_dict(),
        "task_config": to_dict(task_config) if dataclasses.is_dataclass(task_config) else (task_config or {}),
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(
    path: str | Path, model: nn.Module, *, task: str, task_config: Any = None, extra: dict[str, Any] | None = None
) -> None:
    """Writes ``model``'s checkpoint to ``path`` atomically."""
    atomic_write(path, checkpoint_bytes(model, task=task, task_config=task_config, extra=extra))


def _checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "model.pt" if path.is_dir() else path


def load_checkpoint(path: str | Path, *, task: str | None = None, map_location: Any = "cpu") -> Checkpoint:
    """Reads a checkpoint without executing code; ``path`` may be the file or its run directory.

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: one line naming the file: truncated or corrupted, not a structnets
            checkpoint, or a checkpoint of another task than ``task``.
    """
    path = _checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch.load raises many kinds on damaged bytes; each becomes one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {reason[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a structnets checkpoint (expected a dict with format={FORMAT!r}; "
            "checkpoints written before structnets 0.2 must be trained again)"
        )
    if task is not None and payload.get("task") != task:
        raise CheckpointError(f"{path}: a checkpoint of task {payload.get('task')!r}, but {task!r} was expected")
    try:
        return Checkpoint(
            path=path,
            task=payload["task"],
            model_class=payload["model_class"],
            model_config=payload["model_config"],
            state_dict=payload["state_dict"],
            task_config=payload.get("task_config", {}),
            extra=payload.get("extra", {}),
            library_version=payload.get("library_version", "?"),
        )
    except KeyError as missing:
        raise CheckpointError(f"{path}: checkpoint lacks the field {missing}") from None


def load_model(path: str | Path, *, task: str | None = None, map_location: Any = "cpu") -> tuple[nn.Module, Checkpoint]:
    """The model of a checkpoint, rebuilt and in eval mode, and the checkpoint it came from."""
    from .. import models

    checkpoint = load_checkpoint(path, task=task, map_location=map_location)
    cls = getattr(models, checkpoint.model_class, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or checkpoint.model_class not in models.__all__:
        raise CheckpointError(f"{checkpoint.path}: unknown model class {checkpoint.model_class!r}")
    try:
        if hasattr(cls, "from_checkpoint"):
            model = cls.from_checkpoint(checkpoint)
        else:
            model = cls(from_dict(typing_config_class(cls), checkpoint.model_config))
        model.load_state_dict(checkpoint.state_dict)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{checkpoint.path}: not a {checkpoint.model_class} this version can load: {reason}"
        ) from None
    return model.to(map_location).eval(), checkpoint


def typing_config_class(cls: type) -> type:
    """The config dataclass a model class is built from: its ``Config`` attribute, else the
    annotation of its constructor's ``config`` argument."""
    config_cls = getattr(cls, "Config", None)
    if config_cls is None:
        import typing

        config_cls = typing.get_type_hints(cls.__init__).get("config")
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{cls.__name__} takes no config dataclass (a `Config` attribute or a `config` argument)")
    return config_cls


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunDirectory:
    """A run's output directory: atomic files, and ``run.json`` saying whether the run finished.

    Example::

        run = RunDirectory.start(out, task="palindrome")   # marks the directory incomplete
        run.write_json("metrics.json", metrics)
        run.save_model(model, task_config=config)
        run.finish()                                         # complete, with each file's hash
    """

    def __init__(self, path: Path, task: str) -> None:
        self.path, self.task = path, task
        self.files: list[str] = []

    @classmethod
    def check_target(cls, path: str | Path) -> Path:
        """Raises before any work if ``path`` cannot become a run directory (a file stands there)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"--out {path} is a file; give a directory for the run's outputs")
        return path

    @classmethod
    def start(cls, path: str | Path, *, task: str) -> RunDirectory:
        """Creates (or takes over) ``path`` and marks it incomplete until :meth:`finish`."""
        path = cls.check_target(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, task)
        run._write_status("incomplete")
        return run

    def _write_status(self, status: str) -> None:
        record = {"status": status, "task": self.task, "library_version": _library_version()}
        if status == "complete":
            record["files"] = {name: _sha256(self.path / name) for name in sorted(set(self.files))}
        atomic_write(self.path / RUN_FILE, json.dumps(record, indent=2) + "\n")

    def write_bytes(self, name: str, data: bytes | str) -> Path:
        """Writes one output file atomically and records it for :meth:`finish`."""
        atomic_write(self.path / name, data)
        self.files.append(name)
        return self.path / name

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_bytes(name, json.dumps(data, indent=2) + "\n")

    def save_model(
        self, model: nn.Module, *, task_config: Any = None, extra: dict[str, Any] | None = None, name: str = "model.pt"
    ) -> Path:
        return self.write_bytes(name, checkpoint_bytes(model, task=self.task, task_config=task_config, extra=extra))

    def save_figure(self, name: str, figure: Any, **savefig: Any) -> Path:
        """Saves a matplotlib figure atomically (``figure.savefig`` into memory, then the rename)."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format=Path(name).suffix.lstrip(".") or "png", **savefig)
        return self.write_bytes(name, buffer.getvalue())

    def finish(self) -> None:
        """Marks the run complete, recording the hash of every file it wrote."""
        self._write_status("complete")


def open_run(path: str | Path, *, task: str) -> Path:
    """The run directory at ``path``, checked: complete, of ``task``, and its files those the run wrote.

    ``path`` may also name the run's ``model.pt``.

    Raises:
        FileNotFoundError: no run there.
        CheckpointError: an incomplete run (interrupted while training or saving), a run of
            another task, or files changed since the run finished.
    """
    path = Path(path)
    if path.is_file() and path.name == "model.pt":
        path = path.parent
    record_path = path / RUN_FILE
    if not path.is_dir():
        raise FileNotFoundError(f"no run directory at {path}")
    if not record_path.is_file():
        raise CheckpointError(f"{path}: not a structnets run directory (no {RUN_FILE}); train into it first")
    try:
        record = json.loads(record_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{record_path}: unreadable ({error})") from None
    if record.get("task") != task:
        raise CheckpointError(f"{path}: a run of task {record.get('task')!r}, but {task!r} was expected")
    if record.get("status") != "complete":
        raise CheckpointError(
            f"{path}: the run is incomplete (it was interrupted while training or saving); train it again"
        )
    # The model and its metrics must be the pair the run wrote; other outputs (predictions,
    # pictures) are the user's to edit.
    for name, digest in record.get("files", {}).items():
        if name not in ("model.pt", "metrics.json"):
            continue
        file = path / name
        if not file.is_file() or _sha256(file) != digest:
            raise CheckpointError(f"{file}: changed or missing since the run finished; its outputs no longer match")
    return path
