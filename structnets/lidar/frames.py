"""LiDAR frames as Point-GNN sees them: read, cropped to the camera's view, made graphs, batched.

A frame is one scan with its calibration and labels, cropped to what the camera sees (KITTI
labels only that) and turned into Point-GNN's graph
(:func:`structnets.graphs.pointgraph.build_point_graph`), in worker processes when asked.

:class:`PackedFrames` batches frames as the rest of the library batches graphs: one
disconnected graph with node offsets, a ``torch_geometric.data.Batch`` made by
:class:`structnets.graphs.batch.PackedGraphs` from the vertices, their edges and their
per-vertex targets. A point graph also ties raw points to vertices (``point_index``: row 0
a raw point, row 1 a vertex), whose two rows take two different offsets (points, vertices);
the raw points and the ties are packed alongside with :func:`structnets.graphs.batch.ranges`
and set on the same ``Batch``, with the bookkeeping that lets ``to_data_list`` take them
apart again. The result has the ``vertices``, ``edge_index`` and ``point_index`` of
:class:`structnets.graphs.pointgraph.PointGraph`, so the model takes it as it is.

Shapes of a batch of ``G`` frames: ``vertices [V, 4]``, ``edge_index [2, E]``, ``batch [V]``,
``ptr [G + 1]``, ``points [N, 4]``, ``point_index [2, P]``, and with targets ``labels [V]``
and ``codes [V, 8]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from ..graphs.batch import PackedGraphs, bounds, ranges, starts
from ..graphs.pointgraph import PointGraph, build_point_graph
from .kitti import Calibration, KittiObject, boxes_in_lidar, in_camera_view, load_frame, require_labels
from .targets import MIRRORED_CODES, BoxCoder, assign_targets

__all__ = ["GraphConfig", "Frame", "frame_names", "load_frames", "PackedFrames"]


@dataclasses.dataclass(frozen=True)
class GraphConfig:
    """Point-GNN's graph of a scan; the defaults are the paper's for cars.

    Attributes:
        voxel_size: edge of the voxels whose mean point becomes a vertex, in metres.
        radius: vertices closer than this are joined by edges both ways, in metres.
        feature_radius: raw points closer than this to a vertex inform its initial state, in metres.
    """

    voxel_size: float = 0.8
    radius: float = 4.0
    feature_radius: float = 1.0


@dataclasses.dataclass
class Frame:
    """One scan, cropped to the camera's view, with its graph and labels (boxes ``[M, 7]``, LiDAR frame)."""

    name: str
    points: Tensor
    graph: PointGraph
    calibration: Calibration
    objects: list[KittiObject]
    boxes: Tensor


def frame_names(root: Path, split: str = "training") -> list[str]:
    """The frames of ``root/split``, in order; an error that says what KITTI's layout is otherwise."""
    folder = Path(root) / split / "velodyne"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: expected KITTI's layout ({split}/velodyne, calib, label_2)")
    names = sorted(p.stem for p in folder.glob("*.bin"))
    if not names:
        raise FileNotFoundError(f"no .bin scans in {folder}")
    return names


def _read_frame(root: Path, name: str, split: str, config: GraphConfig, labelled: bool = True) -> tuple:
    """One frame as numpy arrays and label objects (what worker processes send back:
    tensors would travel through shared-memory file descriptors, one per tensor)."""
    points, calibration, objects = load_frame(name, root, split=split, labelled=labelled)
    points = points[in_camera_view(points, calibration)]
    if points.shape[0] == 0:
        raise ValueError(f"{root}/{split}/velodyne/{name}.bin: no points in the camera's field of view")
    graph = build_point_graph(
        points, voxel_size=config.voxel_size, radius=config.radius, feature_radius=config.feature_radius
    )
    arrays = [t.numpy() for t in (points, graph.vertices, graph.edge_index, graph.point_index)]
    return name, arrays, calibration, objects


def _frame(read: tuple) -> Frame:
    name, arrays, calibration, objects = read
    points, vertices, edges, pairs = (torch.from_numpy(a) for a in arrays)
    return Frame(
        name, points, PointGraph(vertices, edges, pairs), calibration, objects, boxes_in_lidar(objects, calibration)
    )


def load_frames(
    root: Path,
    config: GraphConfig = GraphConfig(),
    names: list[str] | None = None,
    split: str = "training",
    progress: bool = False,
    workers: int = 1,
    *,
    labelled: bool = True,
) -> list[Frame]:
    """Reads each frame (all of ``split`` by default), crops it to the camera's view and
    builds its graph, in ``workers`` processes.

    Labelled frames (the default: training and evaluation) must each have a ``label_2``
    file, which is checked for all of them before any is read; ``labelled=False`` reads
    frames with or without labels (prediction), a frame without them having no objects.
    """
    names = names or frame_names(root, split)
    if labelled:
        require_labels(Path(root) / split, names)
    bar = tqdm(total=len(names), desc="graphs", unit="frame", disable=not progress)
    frames = []
    if workers > 1 and len(names) > 1:
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        # One torch thread per worker: the workers are the parallelism.
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            count = len(names)
            arguments = [root] * count, names, [split] * count, [config] * count, [labelled] * count
            for read in pool.map(_read_frame, *arguments, chunksize=8):
                frames.append(_frame(read))
                bar.update()
    else:
        for name in names:
            frames.append(_frame(_read_frame(root, name, split, config, labelled)))
            bar.update()
    bar.close()
    return frames


class PackedFrames:
    """Frames concatenated once, so that a batch of them is a few vectorised gathers.

    Args:
        frames: the frames.
        coder: with a coder, each vertex's training targets (:func:`assign_targets`) are
            computed once here and travel with the batch as ``labels`` and ``codes``.
    """

    def __init__(self, frames: Sequence[Frame], coder: BoxCoder | None = None) -> None:
        graphs = []
        for frame in frames:
            vertices = frame.graph.vertices
            fields = {"vertices": vertices, "edge_index": frame.graph.edge_index, "num_nodes": vertices.shape[0]}
            if coder is not None:
                fields["labels"], fields["codes"] = assign_targets(
                    vertices, frame.boxes, [o.type for o in frame.objects], coder
                )
            graphs.append(Data(**fields))
        self.graphs = PackedGraphs(graphs)
        self.point_counts = torch.tensor([f.points.shape[0] for f in frames])
        self.pair_counts = torch.tensor([f.graph.point_index.shape[1] for f in frames])
        self.points = torch.cat([f.points for f in frames])
        self.pairs = torch.cat([f.graph.point_index for f in frames], 1)  # each frame's own numbering
        self.point_start, self.pair_start = starts(self.point_counts), starts(self.pair_counts)

    def __len__(self) -> int:
        return len(self.graphs)

    def batch(self, chosen: Tensor | Sequence[int] | None = None, *, mirror: Tensor | None = None) -> Batch:
        """The chosen frames, in order, as one ``Batch``; ``mirror`` (``[len(chosen)]``, bool)
        reflects those frames in the x-z plane (y to -y, yaw to -yaw), the training set's
        augmentation. Voxels and radius neighbourhoods reflect with the scene, so the graph's
        indices stay valid, and so do the targets' classes; the box codes change sign where
        :data:`MIRRORED_CODES` says."""
        chosen = torch.arange(len(self)) if chosen is None else torch.as_tensor(chosen, dtype=torch.long)
        out = self.graphs.batch(chosen)
        points, pairs = self.point_counts[chosen], self.pair_counts[chosen]
        point_bounds = bounds(points)
        offsets = torch.stack([point_bounds[:-1], out.ptr[:-1]])  # [2, G]: where each frame's points, vertices start
        out.point_index = self.pairs[:, ranges(self.pair_start[chosen], pairs)] + offsets.repeat_interleave(pairs, 1)
        out.points = self.points[ranges(self.point_start[chosen], points)]
        out._slice_dict.update(points=point_bounds, point_index=bounds(pairs))
        out._inc_dict.update(points=torch.zeros(len(chosen), dtype=torch.long), point_index=offsets.t()[:, :, None])
        if mirror is not None:
            sign = 1.0 - 2.0 * torch.as_tensor(mirror, dtype=torch.float32)
            out.vertices[:, 1] *= sign[out.batch]
            out.points[:, 1] *= sign.repeat_interleave(points)
            if "codes" in out:
                flipped = torch.tensor(MIRRORED_CODES, dtype=out.codes.dtype)
                out.codes = torch.where(torch.as_tensor(mirror)[out.batch, None], out.codes * flipped, out.codes)
        return out
