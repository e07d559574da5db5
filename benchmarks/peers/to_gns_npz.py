"""Write any dataset structnets reads in the layout geoelements/gns (PyTorch GNS) reads.

  .venv/bin/python benchmarks/peers/to_gns_npz.py SRC_DIR OUT_DIR [--type-map 1:3,2:3] [--no-unwrap]

SRC_DIR: a folder structnets opens (structnets npz, PyTorch GNS npz, LagrangeBench HDF5 or
DeepMind TFRecord; structnets.physics.formats.open_dataset). OUT_DIR gets:

* ``train.npz``, ``valid.npz``, ``test.npz`` (the splits SRC_DIR has): one member per
  trajectory, named as in SRC_DIR, in SRC_DIR's order, each a pickled object array of two
  entries ``(positions [T, N, D] float32, particle_type [N] int64)``: what
  gns/data_loader.py's ``load_npz_data`` reads (``np.load(allow_pickle=True)``, then
  ``[item for _, item in data_file.items()]``) and what its datasets unpack as
  ``positions, particle_type = item``.
* ``metadata.json`` with the fields gns/train.py reads (``_get_simulator`` and
  ``predict``): ``bounds``, ``dim``, ``default_connectivity_radius``, ``vel_mean``,
  ``vel_std``, ``acc_mean``, ``acc_std``, ``sequence_length``. ``nnode_in``/``nedge_in``
  are left out (train.py then uses 30/37 node and dim+1 edge inputs: no material
  property), and so is ``boundary_augment`` (1.0). The other fields of the source
  metadata (dt, periodic_boundary_conditions, ...) are kept; their code ignores them.
  The file also has the ``"train"`` and ``"rollout"`` sub-dicts of gns's newer metadata
  format (reading_utils.read_metadata picks ``metadata[purpose]``): the same fields, but
  in ``"rollout"`` ``sequence_length`` is null, so that gns's rollout predicts every frame
  after the 6 input ones of each test trajectory (T - 6 frames). With the top-level
  ``sequence_length`` (structnets' and DeepMind's ``frames - 1``) it would stop one frame
  short. The top level stays readable by structnets.

Particle types: geoelements/gns has 9 type embeddings (types 0..8) and treats type 3 as
kinematic (its positions are taken from the ground truth during rollout, and it is left
out of the loss). structnets' own and DeepMind's datasets use DeepMind's codes (5 water,
6 sand, 7 goop, 3 boundary), which map as they are. LagrangeBench tags fluid 0, solid wall
1, moving wall 2: for a LagrangeBench source the default map is ``1:3,2:3`` (walls are
kinematic in gns, as they are prescribed in LagrangeBench). ``--type-map`` overrides it;
types that end outside 0..8 are refused.

Periodic sources (metadata ``periodic_boundary_conditions``, e.g. LagrangeBench's TGV):
geoelements/gns has no periodic boundaries: its velocities are plain frame differences, its
graph is built without wrapping, and its boundary features are the clipped distances to the
faces of ``bounds``. A particle that crosses a periodic face would show a velocity of about
a box length. So by default the trajectories are unwrapped along periodic axes (each frame
displacement taken as the minimum image, then accumulated from frame 0): the velocities
are then right, the particles may leave the box (their wall features clip at the faces),
and neighbours across a periodic face are not connected. ``--no-unwrap`` writes the
positions as they are. What was done is recorded under ``"gns_peer_conversion"`` in
metadata.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from structnets.physics.formats import open_dataset  # noqa: E402

SPLITS = ("train", "valid", "test")
NUM_PARTICLE_TYPES = 9  # gns/train.py
KINEMATIC_PARTICLE_ID = 3  # gns/train.py
LAGRANGEBENCH_TYPE_MAP = {1: 3, 2: 3}


def parse_type_map(text: str | None) -> dict[int, int]:
    if not text:
        return {}
    mapping = {}
    for item in text.split(","):
        src, _, dst = item.partition(":")
        mapping[int(src)] = int(dst)
    return mapping


def unwrap(position: np.ndarray, bounds: np.ndarray, periodic: np.ndarray) -> np.ndarray:
    """Positions ``[T, N, D]`` made continuous in time along the periodic axes."""
    box = bounds[:, 1] - bounds[:, 0]
    step = np.diff(position.astype(np.float64), axis=0)
    wrapped = step - box * np.round(step / box)
    step = np.where(periodic, wrapped, step)
    out = np.concatenate([position[:1].astype(np.float64), position[:1] + np.cumsum(step, axis=0)], axis=0)
    return out.astype(np.float32)


def gns_entry(position: np.ndarray, particle_type: np.ndarray) -> np.ndarray:
    entry = np.empty(2, dtype=object)
    entry[0] = np.ascontiguousarray(position, dtype=np.float32)
    entry[1] = np.ascontiguousarray(particle_type, dtype=np.int64)
    return entry


def convert(src: Path, out: Path, type_map: dict[int, int] | None = None, unwrap_periodic: bool = True) -> dict:
    dataset = open_dataset(src)
    metadata = dataset.metadata
    if type_map is None:
        type_map = dict(LAGRANGEBENCH_TYPE_MAP) if dataset.format == "lagrangebench" else {}
    bounds = np.asarray(metadata.bounds, dtype=np.float64)
    # LagrangeBench writes three entries for 2D cases too; the first dim ones are the axes.
    periodic = np.asarray(metadata.periodic_boundary_conditions or [False] * metadata.dim, dtype=bool)[: metadata.dim]
    do_unwrap = bool(unwrap_periodic and periodic.any())

    out.mkdir(parents=True, exist_ok=True)
    report = {
        "source": str(src),
        "source_format": dataset.format,
        "type_map": {str(k): v for k, v in type_map.items()},
        "unwrapped_periodic_axes": do_unwrap,
        "splits": {},
    }
    lengths = {}
    for split in SPLITS:
        if not dataset.has(split):
            continue
        members = {}
        types_seen = set()
        for i, trajectory in enumerate(dataset.read(split)):
            kinds = np.asarray(trajectory.particle_type, dtype=np.int64)
            mapped = np.array([type_map.get(int(k), int(k)) for k in kinds], dtype=np.int64) if type_map else kinds
            bad = sorted({int(k) for k in np.unique(mapped) if not 0 <= k < NUM_PARTICLE_TYPES})
            if bad:
                raise SystemExit(
                    f"{src} {split} {trajectory.name}: particle types {bad} are outside geoelements/gns's "
                    f"0..{NUM_PARTICLE_TYPES - 1}; map them with --type-map SRC:DST,..."
                )
            types_seen.update(int(k) for k in np.unique(mapped))
            position = trajectory.position
            if do_unwrap:
                position = unwrap(position, bounds, periodic)
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(trajectory.name or f"trajectory_{i}"))
            if name in members:
                name = f"{name}_{i}"
            members[name] = gns_entry(position, mapped)
            lengths.setdefault(split, []).append(int(position.shape[0]))
        np.savez(out / f"{split}.npz", **members)
        report["splits"][split] = {
            "trajectories": len(members),
            "frames": sorted(set(lengths[split])),
            "particle_types": sorted(types_seen),
        }
        if KINEMATIC_PARTICLE_ID in types_seen:
            report["splits"][split]["kinematic_type_3"] = True

    fields = metadata.to_json()
    for key in ("bounds", "dim", "default_connectivity_radius", "vel_mean", "vel_std", "acc_mean", "acc_std"):
        assert key in fields, key
    rollout = dict(fields, sequence_length=None)
    meta = dict(fields, train=dict(fields), rollout=rollout, gns_peer_conversion=report)
    (out / "metadata.json").write_text(json.dumps(meta, indent=1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--type-map",
        default=None,
        help="SRC:DST,... particle-type remapping (default: 1:3,2:3 for LagrangeBench sources, else none)",
    )
    parser.add_argument("--no-unwrap", action="store_true", help="keep periodic trajectories wrapped into the box")
    args = parser.parse_args()
    type_map = parse_type_map(args.type_map) if args.type_map is not None else None
    report = convert(args.src, args.out, type_map, unwrap_periodic=not args.no_unwrap)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
