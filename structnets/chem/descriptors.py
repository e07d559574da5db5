"""Per-molecule features joined to an MPNN's readout: fingerprints, RDKit descriptors, user columns.

A message-passing network sees atoms and bonds; some properties are better predicted with
whole-molecule features as well, concatenated to the pooled graph embedding before the
output network (chemprop's ``--molecule-featurizers`` and ``--descriptors-path``).

* :class:`MoleculeFeaturizer` names what rdkit computes from a SMILES:
  Morgan fingerprints (bits or counts) and RDKit's 2D descriptors.
* :func:`read_descriptors` reads the user's own descriptors, one row per data row.
* :class:`FeatureScaler` imputes and standardises both, fitted on the training split only.
* :class:`FeatureSpec` is what a run (and its checkpoint) records to rebuild the features.

Rules, stated once:

* Computed features may be missing: rdkit returns NaN for some descriptors of some
  molecules (the BCUT2D family for a lone ion, partial charges for elements without
  Gasteiger parameters) and values beyond any sensible range for others (``Ipc`` grows
  exponentially with size: ~1e12 in ESOL, ~1e66 for a 40-residue peptide). The raw output
  of :func:`molecule_features` keeps such values as NaN (infinity and ``|x| > 1e30`` become
  NaN too); :class:`FeatureScaler` imputes them with the training median.
* User descriptors are never imputed: a NaN, an infinity or a text value in the user's
  file is an error naming the file, the row and the column.

Shapes:
    molecule_features: ``[num_molecules, sum of the featurizers' sizes]`` float64.
    read_descriptors: ``[num_rows, num_descriptors]`` float64.
    FeatureScaler.transform: ``[num_molecules, num_features]`` float32.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import Descriptors, rdFingerprintGenerator

from ..train.data import read_csv
from .featurize import MoleculeError, mol_from_smiles

__all__ = [
    "MORGAN_RADIUS",
    "MORGAN_BITS",
    "MISSING_ABOVE",
    "CLIP",
    "MoleculeFeaturizer",
    "rdkit_descriptor_names",
    "molecule_features",
    "read_descriptors",
    "FeatureScaler",
    "FeatureSpec",
    "features_for",
    "scaled_mask",
]

logger = logging.getLogger(__name__)

#: Default Morgan radius (ECFP4) and fingerprint length, chemprop's defaults.
MORGAN_RADIUS = 2
MORGAN_BITS = 2048
#: A computed value with a larger magnitude counts as missing (NaN); float32 ends at ~3.4e38.
MISSING_ABOVE = 1e30
#: Standardised features are clipped to ``[-CLIP, CLIP]`` (see :class:`FeatureScaler`).
CLIP = 10.0
#: Keys :func:`read_descriptors` looks for in an ``.npz`` file, before falling back to its first array.
_NPZ_KEYS = ("descriptors", "X")


@lru_cache(maxsize=1)
def _descriptor_table() -> tuple[tuple[str, Callable[[Chem.Mol], float]], ...]:
    # A snapshot, taken once per process: rdkit's list grows if anyone calls
    # Descriptors.setupAUTOCorrDescriptors(), and the columns must not change mid-run.
    return tuple(Descriptors._descList)


def rdkit_descriptor_names() -> list[str]:
    """Names of the RDKit 2D descriptors, in column order (217 in rdkit 2026.09).

    The list is rdkit's ``Descriptors._descList`` as this rdkit version ships it, so it
    can differ between rdkit versions; a checkpoint should record it.
    """
    return [name for name, _ in _descriptor_table()]


class MoleculeFeaturizer(enum.Enum):
    """Per-molecule features computed by rdkit from a SMILES.

    * ``MORGAN_BINARY``: Morgan (ECFP-like) fingerprint bits, radius 2, 2048 bits by default,
      with chirality (chemprop's default). Not standardised: they are 0/1 already.
    * ``MORGAN_COUNT``: the same fingerprint with the count of each folded bit.
    * ``RDKIT_2D``: every RDKit 2D descriptor (:func:`rdkit_descriptor_names`).
    * ``V1_RDKIT_2D_NORMALIZED``: chemprop's name for descriptastorus' ``rdkit2dnormalized``,
      RDKit descriptors mapped through cumulative distribution functions fitted by
      descriptastorus on a large compound library. descriptastorus is not used here: this
      computes the same columns as ``RDKIT_2D``, and the normalisation is ours
      (median imputation and standardisation fitted on the training split by
      :class:`FeatureScaler`), not descriptastorus' CDFs. The name is accepted so that
      chemprop command lines carry over; the values are not descriptastorus'.
    """

    MORGAN_BINARY = "morgan_binary"
    MORGAN_COUNT = "morgan_count"
    RDKIT_2D = "rdkit_2d"
    V1_RDKIT_2D_NORMALIZED = "v1_rdkit_2d_normalized"

    @classmethod
    def parse(cls, text: str) -> MoleculeFeaturizer:
        """The featurizer named ``text`` (its value, e.g. ``"morgan_binary"``; case and ``-`` ignored).

        Raises:
            ValueError: an unknown name; the message lists the known ones.
        """
        key = text.strip().lower().replace("-", "_")
        for member in cls:
            if member.value == key:
                return member
        known = ", ".join(member.value for member in cls)
        raise ValueError(f"unknown molecule featurizer {text!r}; choose from {known}")

    @property
    def is_fingerprint(self) -> bool:
        """Whether this is a Morgan fingerprint (its width is the fingerprint length)."""
        return self in (MoleculeFeaturizer.MORGAN_BINARY, MoleculeFeaturizer.MORGAN_COUNT)

    @property
    def size(self) -> int:
        """Number of columns with the default fingerprint length (:data:`MORGAN_BITS`)."""
        return self.width(MORGAN_BITS)

    def width(self, bits: int = MORGAN_BITS) -> int:
        """Number of columns for a fingerprint of ``bits`` bits."""
        return bits if self.is_fingerprint else len(_descriptor_table())

    @property
    def scaled(self) -> bool:
        """Whether :class:`FeatureScaler` standardises these columns (all but the fingerprint bits)."""
        return self is not MoleculeFeaturizer.MORGAN_BINARY

    def names(self, bits: int = MORGAN_BITS) -> list[str]:
        """Column names: ``morgan_binary_0 ..`` for fingerprints, rdkit's names for descriptors."""
        if self.is_fingerprint:
            return [f"{self.value}_{k}" for k in range(bits)]
        return rdkit_descriptor_names()


def _check_featurizers(featurizers: Sequence[MoleculeFeaturizer]) -> tuple[MoleculeFeaturizer, ...]:
    featurizers = tuple(featurizers)
    for featurizer in featurizers:
        if not isinstance(featurizer, MoleculeFeaturizer):
            raise TypeError(
                f"expected MoleculeFeaturizer members, got {featurizer!r}; use MoleculeFeaturizer.parse(text) for names"
            )
    repeated = sorted({f.value for f in featurizers if featurizers.count(f) > 1})
    if repeated:
        raise ValueError(f"molecule featurizer(s) given twice: {', '.join(repeated)}")
    descriptor_sets = [f for f in featurizers if not f.is_fingerprint]
    if len(descriptor_sets) > 1:
        raise ValueError(
            f"{' and '.join(f.value for f in descriptor_sets)} compute the same RDKit descriptors here "
            "(the normalisation is the feature scaler's in both); choose one"
        )
    return featurizers


def _check_morgan(radius: int, bits: int) -> None:
    if radius < 0:
        raise ValueError(f"Morgan radius must be >= 0, got {radius}")
    if bits < 1:
        raise ValueError(f"Morgan fingerprint length must be >= 1, got {bits}")


def _descriptors(mol: Chem.Mol, out: np.ndarray) -> None:
    # Like Descriptors.CalcMolDescriptors, but a descriptor that raises gives NaN without
    # its bare ``except:`` (which would also swallow KeyboardInterrupt). rdkit prints
    # nothing while computing these (checked on ESOL, ions, metals, noble gases), so its
    # log is left alone.
    for k, (_, function) in enumerate(_descriptor_table()):
        try:
            out[k] = function(mol)
        except Exception:  # any failure of one descriptor is a missing value
            out[k] = math.nan


def molecule_features(
    smiles: Sequence[str],
    featurizers: Sequence[MoleculeFeaturizer],
    *,
    radius: int = MORGAN_RADIUS,
    bits: int = MORGAN_BITS,
    include_chirality: bool = True,
) -> np.ndarray:
    """Computes the featurizers' columns for each SMILES, in the order the featurizers are given.

    Morgan fingerprints come from ``rdFingerprintGenerator.GetMorganGenerator`` (bits with
    ``GetFingerprintAsNumPy``, counts with ``GetCountFingerprintAsNumPy``), chirality
    included as in chemprop; the descriptors are rdkit's ``Descriptors._descList``.

    A descriptor rdkit cannot compute (NaN, or an exception), an infinity and a value with
    ``|x| > MISSING_ABOVE`` are NaN in the result: imputation is :class:`FeatureScaler`'s job.

    Args:
        smiles: the molecules, parsed with :func:`structnets.chem.mol_from_smiles`.
        featurizers: which features, in column order; each at most once, and at most one of
            ``RDKIT_2D`` and ``V1_RDKIT_2D_NORMALIZED`` (they are the same columns here).
        radius: Morgan radius (2: ECFP4).
        bits: Morgan fingerprint length.
        include_chirality: let atom chirality change the Morgan invariants.

    Shapes:
        returns ``[len(smiles), sum(f.width(bits) for f in featurizers)]`` float64.

    Raises:
        MoleculeError: a SMILES that cannot be parsed; the message names it and its position.
        ValueError: repeated or overlapping featurizers, a bad radius or length.
    """
    featurizers = _check_featurizers(featurizers)
    _check_morgan(radius, bits)
    widths = [f.width(bits) for f in featurizers]
    out = np.empty((len(smiles), sum(widths)), dtype=np.float64)
    if not featurizers or not len(smiles):
        return out
    generator = None
    if any(f.is_fingerprint for f in featurizers):
        generator = rdFingerprintGenerator.GetMorganGenerator(
            radius=radius, fpSize=bits, includeChirality=include_chirality
        )
    starts = np.cumsum([0, *widths])
    started = time.perf_counter()
    for i, text in enumerate(smiles):
        try:
            mol = mol_from_smiles(text)
        except MoleculeError as error:
            raise MoleculeError(f"molecule {i} (0-based) of {len(smiles)}: {error}") from error
        for featurizer, start, stop in zip(featurizers, starts[:-1], starts[1:]):
            row = out[i, start:stop]
            if featurizer is MoleculeFeaturizer.MORGAN_BINARY:
                row[:] = generator.GetFingerprintAsNumPy(mol)
            elif featurizer is MoleculeFeaturizer.MORGAN_COUNT:
                row[:] = generator.GetCountFingerprintAsNumPy(mol)
            else:
                _descriptors(mol, row)
    with np.errstate(invalid="ignore"):
        out[~(np.abs(out) <= MISSING_ABOVE)] = math.nan  # NaN compares False, so it stays NaN
    logger.debug(
        "%s for %d molecules in %.2f s (%d missing values)",
        "+".join(f.value for f in featurizers),
        len(smiles),
        time.perf_counter() - started,
        int(np.isnan(out).sum()),
    )
    return out


# ---------------------------------------------------------------------------- user descriptors
def _load_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:  # object arrays need pickle, which is never enabled
        raise ValueError(f"{path}: cannot read it as a numpy {suffix} file without pickle: {error}") from None
    except OSError as error:
        raise ValueError(f"{path}: not a readable numpy {suffix} file: {error}") from None
    if suffix == ".npy":
        if not isinstance(loaded, np.ndarray):
            raise ValueError(f"{path}: expected one array in a .npy file")
        return loaded
    with loaded:
        keys = list(loaded.files)
        if not keys:
            raise ValueError(f"{path} holds no arrays")
        key = next((k for k in _NPZ_KEYS if k in keys), keys[0])
        if key not in _NPZ_KEYS and len(keys) > 1:
            logger.info("%s: using its first array %r (of %s)", path, key, keys)
        try:
            return loaded[key]
        except ValueError as error:
            raise ValueError(f"{path}: cannot read array {key!r} without pickle: {error}") from None


def _check_array(path: Path, array: np.ndarray, num_rows: int) -> np.ndarray:
    if array.ndim == 1:
        raise ValueError(
            f"{path}: a 1-D array of {array.shape[0]} values; descriptors must be 2-D [num_rows, num_descriptors]. "
            "For one descriptor per row save array.reshape(-1, 1)"
        )
    if array.ndim != 2:
        raise ValueError(
            f"{path}: a {array.ndim}-D array of shape {array.shape}; expected 2-D [num_rows, num_descriptors]"
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: array of {array.dtype} values; descriptors must be numbers")
    if array.shape[0] != num_rows:
        raise ValueError(f"{path}: {array.shape[0]} rows of descriptors, but the data file has {num_rows} data rows")
    if array.shape[1] == 0:
        raise ValueError(f"{path}: the array has no columns")
    values = array.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(
            f"{path}: {values[row, column]} at row {row}, column {column} (0-based; {int(bad.sum())} non-finite "
            "value(s) in all); user descriptors must be finite numbers, they are not imputed"
        )
    return values


def _read_csv_descriptors(
    path: Path, num_rows: int, skip_columns: Sequence[str], smiles: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    table = read_csv(path)
    table.check_unique()
    skip = {name.strip().lower() for name in skip_columns}
    columns = [k for k, name in enumerate(table.names) if name.lower() not in skip]
    if not columns:
        raise ValueError(f"{path}: no descriptor columns (the columns are {table.names}; skipped: {sorted(skip)})")
    rows = table.rows
    if len(rows) != num_rows:
        raise ValueError(f"{path}: {len(rows)} data rows of descriptors, but the data file has {num_rows} data rows")
    smiles_column = next((k for k, name in enumerate(table.names) if name.lower() == "smiles"), None)
    out = np.empty((num_rows, len(columns)), dtype=np.float64)
    for record in rows:
        width = table.width_error(record)
        if width is not None:
            raise ValueError(f"{path}, line {record.line}: {width}")
        if smiles is not None and smiles_column is not None:
            given, expected = record.fields[smiles_column].strip(), smiles[record.index].strip()
            if given != expected:
                raise ValueError(
                    f"{path}, line {record.line}: SMILES {given!r}, but data row {record.index} is {expected!r}; "
                    "the descriptor rows must be in the data file's order"
                )
        for j, k in enumerate(columns):
            text = record.fields[k].strip()
            where = f"{path}, line {record.line}, column {k + 1} ({table.names[k]!r})"
            if not text:
                raise ValueError(f"{where}: empty value; user descriptors must be numbers, they are not imputed")
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{where}: non-numeric value {record.fields[k]!r}") from None
            if not math.isfinite(value):
                raise ValueError(
                    f"{where}: {text!r} is not a finite number; user descriptors must be finite, they are not imputed"
                )
            out[record.index, j] = value
    return out, [table.names[k] for k in columns]


def read_descriptors(
    path: str | Path,
    num_rows: int,
    *,
    skip_columns: Sequence[str] = ("smiles",),
    smiles: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Reads user descriptors, one row for each data row of the data CSV, in its order.

    chemprop's ``--descriptors-path``. Formats, by suffix:

    * ``.npz``: the array ``descriptors`` or ``X``, else the first array; 2-D.
    * ``.npy``: one 2-D array.
    * ``.csv``: a header row, then one record per data row; every column whose name is not
      in ``skip_columns`` (compared without case or surrounding spaces) is a descriptor.

    Every value must be a finite number: NaN, infinity, an empty field or text is an error,
    never imputed, because the user wrote it.

    Args:
        path: the file.
        num_rows: the number of data rows of the data file (skipped molecules included:
            the descriptor rows are matched to the data rows by position).
        skip_columns: CSV columns that are not descriptors.
        smiles: the data file's SMILES by data row; if given and the CSV has a ``smiles``
            column, each row's SMILES must equal it (after removing surrounding spaces),
            which catches descriptor files in another order.

    Shapes:
        returns ``([num_rows, num_descriptors]`` float64, ``num_descriptors`` names). For
        arrays the names are ``descriptor_0 ..``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown suffix, a wrong number of rows (both counts named), a 1-D or
            non-numeric array, a non-finite or non-numeric value (file, line or row, and
            column named), or a SMILES that does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no descriptors file at {path}")
    if smiles is not None and len(smiles) != num_rows:
        raise ValueError(f"read_descriptors: {len(smiles)} SMILES for {num_rows} data rows")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        values, names = _read_csv_descriptors(path, num_rows, skip_columns, smiles)
    elif suffix in (".npz", ".npy"):
        values = _check_array(path, _load_array(path), num_rows)
        names = [f"descriptor_{k}" for k in range(values.shape[1])]
    else:
        raise ValueError(f"{path}: descriptors are read from .npz, .npy or .csv files, not {suffix or 'no suffix'!r}")
    logger.info("%s: %d descriptor(s) for %d rows", path, values.shape[1], values.shape[0])
    return values, names


# ---------------------------------------------------------------------------- scaling
@dataclass(frozen=True, eq=False)
class FeatureScaler:
    """Imputation and standardisation of per-molecule features, fitted on the training split.

    For each column, ``median`` is the median of the finite training values (0 where the
    column has none), and ``mean`` and ``std`` are those of the training values after
    imputation (``std`` is 1 for a column constant on the training split). :meth:`transform`

    1. replaces every non-finite value by its column's training median (the imputation rule),
    2. standardises the ``scaled`` columns, ``(x - mean) / std``, and leaves the others
       (fingerprint bits) as they are,
    3. clips the standardised values to ``[-clip, clip]``: a test molecule far outside the
       training range (``Ipc`` spans tens of orders of magnitude) must not blow up the readout.

    :meth:`count_imputed` says how many values step 1 replaces, for the caller to report.

    Attributes:
        median, mean, std: per column, float64.
        scaled: per column, whether it is standardised.
        clip: the bound on standardised values.

    Shapes:
        median, mean, std, scaled: ``[num_features]``.
        features: ``[num_molecules, num_features]``.
    """

    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    scaled: np.ndarray
    clip: float = CLIP

    @classmethod
    def fit(cls, features: np.ndarray, scaled: np.ndarray, *, clip: float = CLIP) -> FeatureScaler:
        """Fitted on ``features``, which must be the training rows only.

        Shapes:
            features: ``[num_train, num_features]``; scaled: ``[num_features]`` bool.
        """
        features = np.asarray(features, dtype=np.float64)
        scaled = np.asarray(scaled, dtype=bool)
        if features.ndim != 2 or scaled.shape != (features.shape[1],):
            raise ValueError(
                f"FeatureScaler.fit: features {features.shape} and scaled {scaled.shape} must be [n, k] and [k]"
            )
        if features.shape[0] == 0:
            raise ValueError("FeatureScaler.fit: no training rows")
        if not clip > 0:
            raise ValueError(f"FeatureScaler.fit: clip must be positive, got {clip}")
        finite = np.isfinite(features)
        with warnings.catch_warnings():  # an all-NaN column warns and gives NaN, replaced below
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(np.where(finite, features, np.nan), axis=0)
        median = np.where(np.isfinite(median), median, 0.0)
        imputed = np.where(finite, features, median)
        mean = imputed.mean(0)
        std = imputed.std(0)
        # An exactly constant column, not a small std: summation error makes a constant's std ~1e-16.
        constant = imputed.max(0) == imputed.min(0)
        std = np.where(constant | ~(std > 0), 1.0, std)
        return cls(median, mean, std, scaled, float(clip))

    @property
    def num_features(self) -> int:
        return int(self.median.shape[0])

    def _check(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"FeatureScaler: features of shape {features.shape}, expected [n, {self.num_features}]")
        return features

    def count_imputed(self, features: np.ndarray) -> int:
        """How many values of ``features`` :meth:`transform` replaces by the training median."""
        return int((~np.isfinite(self._check(features))).sum())

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Imputed, standardised (``scaled`` columns) and clipped features.

        Shapes:
            features: ``[n, num_features]``; returns ``[n, num_features]`` float32.
        """
        features = self._check(features)
        out = np.where(np.isfinite(features), features, self.median)
        standardised = np.clip((out - self.mean) / self.std, -self.clip, self.clip)
        return np.where(self.scaled, standardised, out).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and a float for a checkpoint (they load with ``torch.load(weights_only=True)``)."""
        return {
            "median": torch.from_numpy(self.median.copy()),
            "mean": torch.from_numpy(self.mean.copy()),
            "std": torch.from_numpy(self.std.copy()),
            "scaled": torch.from_numpy(self.scaled.copy()),
            "clip": float(self.clip),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> FeatureScaler:
        def array(key: str, dtype: type) -> np.ndarray:
            value = state[key]
            value = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            return value.astype(dtype)

        return cls(
            array("median", np.float64),
            array("mean", np.float64),
            array("std", np.float64),
            array("scaled", bool),
            float(state.get("clip", CLIP)),
        )


# ---------------------------------------------------------------------------- the whole feature vector
def scaled_mask(
    featurizers: Sequence[MoleculeFeaturizer], num_descriptors: int = 0, *, bits: int = MORGAN_BITS
) -> np.ndarray:
    """Which columns of :func:`features_for` :class:`FeatureScaler` standardises.

    The featurizers' columns (see :attr:`MoleculeFeaturizer.scaled`), then the user
    descriptors, which are always standardised.

    Shapes:
        returns ``[sum of widths + num_descriptors]`` bool.
    """
    featurizers = _check_featurizers(featurizers)
    parts = [np.full(f.width(bits), f.scaled) for f in featurizers] + [np.ones(num_descriptors, dtype=bool)]
    return np.concatenate(parts).astype(bool)


def features_for(
    smiles: Sequence[str],
    featurizers: Sequence[MoleculeFeaturizer],
    descriptors: np.ndarray | None = None,
    *,
    radius: int = MORGAN_RADIUS,
    bits: int = MORGAN_BITS,
    include_chirality: bool = True,
) -> np.ndarray:
    """The raw feature matrix: :func:`molecule_features`, then the user descriptors.

    Shapes:
        descriptors: ``[len(smiles), num_descriptors]`` (rows in the order of ``smiles``).
        returns ``[len(smiles), sum of widths + num_descriptors]`` float64.
    """
    computed = molecule_features(smiles, featurizers, radius=radius, bits=bits, include_chirality=include_chirality)
    if descriptors is None:
        return computed
    descriptors = np.asarray(descriptors, dtype=np.float64)
    if descriptors.ndim != 2 or descriptors.shape[0] != len(smiles):
        raise ValueError(f"features_for: descriptors of shape {descriptors.shape} for {len(smiles)} molecules")
    return np.concatenate([computed, descriptors], axis=1)


@dataclass(frozen=True)
class FeatureSpec:
    """Which per-molecule features a run joins to the readout; recorded in its checkpoint.

    Attributes:
        featurizers: computed features, in column order.
        descriptors_path: the user descriptors file of the training data, or None.
        radius, bits, include_chirality: the Morgan fingerprint settings.
    """

    featurizers: tuple[MoleculeFeaturizer, ...] = ()
    descriptors_path: str | None = None
    radius: int = MORGAN_RADIUS
    bits: int = MORGAN_BITS
    include_chirality: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "featurizers", _check_featurizers(self.featurizers))
        if self.descriptors_path is not None:
            object.__setattr__(self, "descriptors_path", str(self.descriptors_path))
        _check_morgan(self.radius, self.bits)

    @property
    def enabled(self) -> bool:
        """Whether there are any extra features at all."""
        return bool(self.featurizers) or self.descriptors_path is not None

    def size(self, num_descriptors: int = 0) -> int:
        """Width of the feature vector with ``num_descriptors`` user descriptor columns."""
        return sum(f.width(self.bits) for f in self.featurizers) + num_descriptors

    def names(self, descriptor_names: Sequence[str] = ()) -> list[str]:
        """Column names: each featurizer's, then the user descriptors'."""
        return [name for f in self.featurizers for name in f.names(self.bits)] + list(descriptor_names)

    def scaled_mask(self, num_descriptors: int = 0) -> np.ndarray:
        """See :func:`scaled_mask`."""
        return scaled_mask(self.featurizers, num_descriptors, bits=self.bits)

    def features(self, smiles: Sequence[str], descriptors: np.ndarray | None = None) -> np.ndarray:
        """See :func:`features_for`; ``descriptors`` is required exactly when ``descriptors_path`` is set.

        Shapes:
            returns ``[len(smiles), self.size(num_descriptors)]`` float64.
        """
        if (descriptors is None) != (self.descriptors_path is None):
            raise ValueError(
                f"FeatureSpec(descriptors_path={self.descriptors_path!r}): "
                + ("pass the descriptors read from it" if descriptors is None else "got descriptors it does not name")
            )
        return features_for(
            smiles,
            self.featurizers,
            descriptors,
            radius=self.radius,
            bits=self.bits,
            include_chirality=self.include_chirality,
        )

    def row_features(
        self,
        smiles_columns: Sequence[Sequence[str]],
        descriptors: np.ndarray | None = None,
        descriptor_names: Sequence[str] = (),
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """The features of rows of one or more molecules: ``(raw, names, scaled)``.

        The computed features come for each molecule column in turn (names suffixed ``@k``
        when there are several), then the row's user descriptors, which are required exactly
        when ``descriptors_path`` is set.

        Shapes:
            smiles_columns[k]: one SMILES per row; descriptors: ``[rows, num_descriptors]``;
            raw: ``[rows, width]`` float64; scaled: ``[width]`` bool (:func:`scaled_mask`).
        """
        if (descriptors is None) != (self.descriptors_path is None):
            raise ValueError(
                f"the model was trained with user descriptors ({self.descriptors_path}): give this file's with "
                "--descriptors-path, one row per data row"
                if descriptors is None
                else "the model was trained without user descriptors: --descriptors-path does not apply"
            )
        rows = len(smiles_columns[0])
        computed = dataclasses.replace(self, descriptors_path=None)
        several = len(smiles_columns) > 1
        parts = [computed.features(column) for column in smiles_columns] if self.featurizers else []
        suffixes = [f"@{k + 1}" if several else "" for k in range(len(smiles_columns))] if self.featurizers else []
        names = [name + suffix for suffix in suffixes for name in computed.names()]
        masks = [scaled_mask(self.featurizers, 0, bits=self.bits) for _ in suffixes]
        if descriptors is not None:
            parts.append(np.asarray(descriptors, dtype=np.float64))
            names += list(descriptor_names) or [f"descriptor_{k}" for k in range(descriptors.shape[1])]
            masks.append(np.ones(descriptors.shape[1], dtype=bool))
        raw = np.concatenate(parts, axis=1) if parts else np.zeros((rows, 0))
        return raw, names, np.concatenate(masks) if masks else np.zeros(0, dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (they load with ``torch.load(weights_only=True)``)."""
        return {
            "featurizers": [f.value for f in self.featurizers],
            "descriptors_path": self.descriptors_path,
            "radius": self.radius,
            "bits": self.bits,
            "include_chirality": self.include_chirality,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            tuple(MoleculeFeaturizer(value) for value in state.get("featurizers", ())),
            state.get("descriptors_path"),
            int(state.get("radius", MORGAN_RADIUS)),
            int(state.get("bits", MORGAN_BITS)),
            bool(state.get("include_chirality", True)),
        )
