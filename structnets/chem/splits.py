"""Train/validation/test splits of a molecule dataset, as lists of row indices.

A split is a ``dict`` with the keys ``"train"``, ``"val"`` and ``"test"``, each a sorted
list of 0-based positions in the dataset (not file line numbers). The three lists are
disjoint; a split made here covers every molecule, one read from JSON need not.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from rdkit.Chem.Scaffolds import MurckoScaffold

from .featurize import MoleculeError, mol_from_smiles

__all__ = [
    "SPLIT_NAMES",
    "random_split",
    "sized_split",
    "murcko_scaffold",
    "scaffold_split",
    "read_split_json",
    "write_split_json",
]

#: The keys of a split, in order.
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values) or abs(sum(values) - 1) > 1e-6:
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {tuple(fractions)}"
        )
    return values  # type: ignore[return-value]


def random_split(num: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[int]]:
    """Splits ``range(num)`` at random; the same ``seed`` gives the same split.

    The part boundaries of a random permutation are ``round(num * train)`` and
    ``round(num * (train + val))``, so the sizes add up to ``num``.
    """
    if num < 0:
        raise ValueError(f"num must be non-negative, got {num}")
    train, val, _ = _check_fractions(fractions)
    order = np.random.default_rng(seed).permutation(num).tolist()
    first, second = round(num * train), round(num * (train + val))
    parts = (order[:first], order[first:second], order[second:])
    return {name: sorted(part) for name, part in zip(SPLIT_NAMES, parts)}


def sized_split(num: int, train: int, val: int, seed: int = 0) -> dict[str, list[int]]:
    """A random split with ``train`` and ``val`` molecules and the rest as test.

    Gilmer et al. (2017) split QM9 this way: 110,000 training and 10,000 validation
    molecules, the remaining ~10,800 for test (``sized_split(len(qm9), 110_000, 10_000)``).
    """
    if train < 1 or val < 0 or train + val > num:
        raise ValueError(f"cannot take {train} training and {val} validation molecules out of {num}")
    order = np.random.default_rng(seed).permutation(num).tolist()
    parts = (order[:train], order[train : train + val], order[train + val :])
    return {name: sorted(part) for name, part in zip(SPLIT_NAMES, parts)}


def murcko_scaffold(smiles: str) -> str:
    """The Bemis-Murcko scaffold of a molecule as canonical SMILES, without stereochemistry.

    Molecules without rings have the empty scaffold ``""``.

    Raises:
        MoleculeError: the SMILES cannot be parsed.
    """
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol_from_smiles(smiles), includeChirality=False)


def scaffold_split(
    smiles: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    *,
    balanced: bool = True,
) -> dict[str, list[int]]:
    """Splits molecules so that all molecules sharing a Bemis-Murcko scaffold land in one part.

    This is chemprop's scaffold split (Yang et al. 2019, ``scaffold_split``): molecules are
    grouped by scaffold and whole groups are dealt out, each to train if it still fits
    within ``train * n`` molecules, else to validation if it fits within ``val * n``, else
    to test. With ``balanced=True`` (chemprop's ``balanced_scaffold_split``) the groups
    larger than half the validation or half the test size are dealt first, in random
    order, followed by the smaller groups in random order; so the big scaffold families
    end up in train, and validation and test get a varied mix. With ``balanced=False``
    groups are dealt from largest to smallest (ties in order of first appearance), which
    ignores ``seed``.

    Raises:
        MoleculeError: a SMILES cannot be parsed (the message names its position).
    """
    train_fraction, val_fraction, test_fraction = _check_fractions(fractions)
    count = len(smiles)
    groups: dict[str, list[int]] = {}
    for index, text in enumerate(smiles):
        try:
            scaffold = murcko_scaffold(text)
        except MoleculeError as error:
            raise MoleculeError(f"molecule {index}: {error}") from error
        groups.setdefault(scaffold, []).append(index)
    train_size, val_size, test_size = train_fraction * count, val_fraction * count, test_fraction * count
    if balanced:
        big = [g for g in groups.values() if len(g) > val_size / 2 or len(g) > test_size / 2]
        small = [g for g in groups.values() if not (len(g) > val_size / 2 or len(g) > test_size / 2)]
        generator = random.Random(seed)
        generator.shuffle(big)
        generator.shuffle(small)
        ordered = big + small
    else:
        ordered = sorted(groups.values(), key=len, reverse=True)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for group in ordered:
        if len(train) + len(group) <= train_size:
            train += group
        elif len(val) + len(group) <= val_size:
            val += group
        else:
            test += group
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def _check_split(split: object, num: int | None, where: str) -> dict[str, list[int]]:
    """The split as plain lists, or a ValueError naming ``where``, the key and the value."""
    if not isinstance(split, Mapping):
        raise ValueError(
            f"{where}: a split must be an object with keys {', '.join(SPLIT_NAMES)}, got {type(split).__name__}"
        )
    for name in SPLIT_NAMES:
        if name not in split:
            raise ValueError(f"{where}: missing key {name!r} (keys present: {', '.join(map(repr, split)) or 'none'})")
    extra = [key for key in split if key not in SPLIT_NAMES]
    if extra:
        raise ValueError(
            f"{where}: unexpected key(s) {', '.join(map(repr, extra))}; a split has {', '.join(SPLIT_NAMES)}"
        )
    owner: dict[int, str] = {}
    out: dict[str, list[int]] = {}
    for name in SPLIT_NAMES:
        indices = split[name]
        if not isinstance(indices, (list, tuple)):
            raise ValueError(f"{where}: {name!r} must be a list of row indices, got {type(indices).__name__}")
        for value in indices:
            # bool is an int subclass, and true/false in a split file is surely a mistake.
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{where}: {name!r} holds {value!r}, which is not an integer row index")
            if value < 0 or (num is not None and value >= num):
                bound = f"0..{num - 1}" if num is not None else "non-negative"
                raise ValueError(f"{where}: {name!r} holds index {value}, out of range ({bound} for {num} rows)")
            if value in owner:
                where_else = (
                    "twice in the same split" if owner[value] == name else f"in both {owner[value]!r} and {name!r}"
                )
                raise ValueError(f"{where}: index {value} appears {where_else}")
            owner[int(value)] = name
        out[name] = [int(v) for v in indices]
    return out


def read_split_json(path: str | Path, num: int) -> dict[str, list[int]]:
    """Reads ``{"train": [...], "val": [...], "test": [...]}`` of 0-based row indices.

    chemprop's ``--splits-file`` format, a list of such objects, is read when it holds one.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid JSON, a missing or unexpected key, a non-integer or
            out-of-range index (``0 <= index < num``), or an index in two splits;
            the message names the file, the key and the value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no split file at {path}")
    try:
        split = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from error
    if isinstance(split, list):
        if len(split) != 1:
            raise ValueError(
                f"{path}: a list of {len(split)} splits (chemprop's --splits-file); structnets trains on one split "
                "a run: give a file with one"
            )
        split = split[0]
    return _check_split(split, num, str(path))


def write_split_json(split: Mapping[str, Sequence[int]], path: str | Path) -> None:
    """Writes a split as JSON, one key per line, readable by :func:`read_split_json`."""
    checked = _check_split(split, None, "split")
    body = ",\n".join(f"  {json.dumps(name)}: {json.dumps(checked[name])}" for name in SPLIT_NAMES)
    Path(path).write_text("{\n" + body + "\n}\n")
