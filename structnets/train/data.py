"""Where datasets live: the data-directory setting shared by every loader.

Loaders name each dataset's canonical source and read a local copy from the data
directory, which is, in order: the ``data_dir`` argument a loader is given, the
``STRUCTNETS_DATA_DIR`` environment variable, or ``~/.cache/structnets/data``. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["data_dir", "dataset_path", "check_finite", "read_text", "CsvRecord", "CsvTable", "read_csv"]

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


_GZIP_MAGIC = b"\x1f\x8b"


def read_text(path: str | Path) -> str:
    """A text file's content, decoded as UTF-8 (an optional byte-order mark is dropped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is gzip-compressed, or not UTF-8; the message names the
            file, and for a decoding error the line and the byte.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    data = path.read_bytes()
    if data.startswith(_GZIP_MAGIC):
        raise ValueError(f"{path} is gzip-compressed; decompress it first (gunzip -k {path})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save the file as UTF-8"
        ) from None


class CsvRecord(NamedTuple):
    """One record of a CSV file after its header.

    ``line`` is the 1-based line where the record starts (the header is line 1, as an
    editor counts); ``index`` the 0-based position among the data rows (blank lines are
    not data rows and have ``index`` None and no ``fields``).
    """

    line: int
    index: int | None
    fields: list[str]


@dataclass(frozen=True)
class CsvTable:
    """A CSV file as written: its header and every record, blank lines included, in order.

    Nothing is dropped or changed: fields keep their spaces, duplicate column names stay
    duplicates, and a row may have more or fewer fields than the header (see :meth:`width_error`).
    Column lookups match names with surrounding spaces removed.
    """

    path: Path
    header: list[str]
    records: list[CsvRecord]
    blank_lines_before_header: int = 0

    @property
    def names(self) -> list[str]:
        """The column names with surrounding spaces removed."""
        return [name.strip() for name in self.header]

    def duplicates(self) -> list[str]:
        """Column names that the header gives more than once, in header order."""
        seen: set[str] = set()
        repeated: list[str] = []
        for name in self.names:
            if name in seen and name not in repeated:
                repeated.append(name)
            seen.add(name)
        return repeated

    def column(self, name: str, flag: str = "column") -> int:
        """The position of column ``name``; a ValueError if it is missing or named twice."""
        names = self.names
        if name not in names:
            listed = ", ".join(map(repr, names))
            raise ValueError(f"{self.path}: no {flag} {name!r}; the columns are {listed}")
        places = [k + 1 for k, n in enumerate(names) if n == name]
        if len(places) > 1:
            raise ValueError(f"{self.path}: the header names {name!r} {len(places)} times (columns {places})")
        return names.index(name)

    def check_unique(self) -> None:
        """A ValueError if any column name appears twice."""
        repeated = self.duplicates()
        if repeated:
            names = self.names
            shown = "; ".join(f"{n!r} at columns {[k + 1 for k, m in enumerate(names) if m == n]}" for n in repeated)
            raise ValueError(f"{self.path}: the header names a column more than once ({shown}); rename them")

    def width_error(self, record: CsvRecord) -> str | None:
        """Why a data row does not fit the header (too few or too many fields), or None."""
        if len(record.fields) == len(self.header):
            return None
        return f"{len(record.fields)} fields, but the header has {len(self.header)}"

    @property
    def rows(self) -> list[CsvRecord]:
        """The data rows (blank lines left out)."""
        return [r for r in self.records if r.index is not None]


def read_csv(path: str | Path) -> CsvTable:
    """Reads a CSV file with a header row, keeping every record as written.

    The header is the first line that holds a non-empty field; blank lines before it are
    counted, blank lines after it kept as records without fields.

    Raises:
        FileNotFoundError: no such file.
        ValueError: gzip-compressed or non-UTF-8 content, a malformed record (for example
            a NUL byte or an unterminated quote), or no header; the message names the file
            and, where there is one, the line.
    """
    path = Path(path)
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    blank_before = 0
    records: list[CsvRecord] = []
    index = 0
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader, None)
        except csv.Error as error:
            raise ValueError(f"{path}, line {line}: not valid CSV: {error}") from None
        if fields is None:
            break
        if header is None:
            if any(f.strip() for f in fields):
                header = fields
            else:
                blank_before += 1
            continue
        if not fields:
            records.append(CsvRecord(line, None, []))
            continue
        records.append(CsvRecord(line, index, fields))
        index += 1
    if header is None:
        raise ValueError(f"{path} is empty: expected a header row naming the columns")
    return CsvTable(path, header, records, blank_before)
