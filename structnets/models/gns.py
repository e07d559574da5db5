"""The learned simulator of Sanchez-Gonzalez et al. (2020): encode, process, decode.

::

    positions x_{t-5..t} ──► node features: normalised velocities (5 steps), particle-type
                             embedding, distances to the walls (clipped at the radius)
    radius graph at x_t ───► edge features: displacement and distance, over the radius
        encoder: MLPs to latent size L ──► processor: M interaction networks (residual),
        the M rounds of the core's synchronous schedule ──► decoder: MLP to the
        normalised acceleration ──► x_{t+1} = x_t + (x_t - x_{t-1}) + a   (semi-implicit Euler)

Each interaction network updates every edge from its two ends, ``e' = e + MLP([e, v_s,
v_r])``, then every node from the sum of its incoming edges, ``v' = v + MLP([v, sum e'])``.
The M blocks are one :func:`structnets.propagate` call under the synchronous schedule, one
edge step and one node step per round (the blocks do not share weights, as in the paper);
the updated edges come back with the nodes.

Periodic boxes (``metadata.periodic_boundary_conditions``, as LagrangeBench's datasets have
them): on a periodic axis every displacement is the minimum-image one (velocities,
accelerations, edge vectors), the radius graph links neighbours across the faces
(:func:`structnets.radius_graph` with ``box=``), stepped positions are wrapped back into the
box, and the node features have no wall distances for that axis (it has no walls).

The graph is the radius graph at the latest positions, built by the model (a rollout's
particles move), or given: ``model(history, particle_type, edge_index=graph)`` runs the
encoder, processor and decoder on that graph, which is what ``torch.export`` and the ONNX
exporter take, with dynamic numbers of particles and edges (the radius graph computed
outside the program). ``model(data)`` reads a torch_geometric ``Data`` or ``Batch``'s
``history``, ``particle_type``, ``batch`` and, when it has edges, ``edge_index``.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.propagate import is_graph_data, propagate
from ..core.schedules import Synchronous
from ..graphs.neighbors import minimum_image, radius_graph
from ..nn.mlp import MLP

__all__ = ["HISTORY", "GNSConfig", "SimulatorMetadata", "LearnedSimulator"]

HISTORY = 5  # velocities in the input, so 6 positions


class SimulatorMetadata(Protocol):
    """What the simulator needs to know of a dataset, named as in the datasets' ``metadata.json``.

    The physics field's ``SimulationMetadata`` has these fields (and more), as has any
    object with these attributes.

    Attributes:
        dim: spatial dimension D.
        bounds: ``[D, 2]`` lower and upper wall per dimension.
        default_connectivity_radius: the radius of the neighbour graph.
        vel_mean, vel_std: ``[D]`` statistics of a step's displacement, normalising velocities.
        acc_mean, acc_std: ``[D]`` statistics of the acceleration, the normalised target.
        periodic_boundary_conditions: optional, ``[D]`` booleans: the axes on which the
            bounds are a periodic box rather than walls (missing or None: walls everywhere).
    """

    @property
    def dim(self) -> int: ...

    @property
    def bounds(self) -> Sequence[Sequence[float]]: ...

    @property
    def default_connectivity_radius(self) -> float: ...

    @property
    def vel_mean(self) -> Sequence[float]: ...

    @property
    def vel_std(self) -> Sequence[float]: ...

    @property
    def acc_mean(self) -> Sequence[float]: ...

    @property
    def acc_std(self) -> Sequence[float]: ...


def _mlp(inputs: int, hidden: int, outputs: int, layers: int, norm: bool = True) -> MLP:
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear output (LayerNorm'd if ``norm``)."""
    return MLP([inputs] + [hidden] * layers + [outputs], norm=nn.LayerNorm if norm else None)


@dataclass(frozen=True)
class GNSConfig:
    """Sizes of a :class:`LearnedSimulator` (the paper's by default).

    Attributes:
        latent_size: width L of node and edge latents and of every MLP's hidden layers.
        message_passing_steps: M, the interaction networks of the processor.
        mlp_layers: hidden layers per MLP.
        particle_types: rows of the particle-type embedding.
        type_embedding_size: width of that embedding.
        connectivity_radius: the neighbour graph's radius; None takes the dataset's
            ``default_connectivity_radius``.
    """

    latent_size: int = 128
    message_passing_steps: int = 10
    mlp_layers: int = 2
    particle_types: int = 9
    type_embedding_size: int = 16
    connectivity_radius: float | None = None


class _EdgeUpdate(MLP):
    """``e' = e + MLP([e, v_s, v_r])``, an edge step of the synchronous schedule.

    The module is the MLP itself, so its parameters keep the names ``edge_updates.{i}.{k}``
    that trained checkpoints have. Its first layer is applied as ``W_e e + (W_s v)[s] + (W_r
    v)[r]``, the same product split by the blocks of ``W``: the node blocks multiply the N
    node states once instead of their E copies on the edges (a graph of water has 10-20
    edges per node), which takes two thirds of the first layer's work off the edges.
    """

    def __init__(self, latent: int, layers: int) -> None:
        super().__init__([3 * latent] + [latent] * layers + [latent], norm=nn.LayerNorm)

    def forward(self, edges: Tensor, nodes: Tensor, edge_index: Tensor) -> Tensor:
        first, latent = self[0], edges.shape[-1]
        weight = first.weight
        blocks = torch.cat([weight[:, latent : 2 * latent], weight[:, 2 * latent :]])  # [2 hidden, L]
        ends = F.linear(nodes, blocks)  # [N, 2 hidden]: each node as a sender, then as a receiver
        hidden = F.linear(edges, weight[:, :latent], first.bias)
        width = weight.shape[0]
        hidden = hidden + ends[edge_index[0], :width] + ends[edge_index[1], width:]
        for layer in list(self)[1:]:
            hidden = layer(hidden)
        return edges + hidden


class _NodeUpdate(nn.Module):
    """``v' = v + MLP([v, aggregated edges])``, a node step of the synchronous schedule."""

    def __init__(self, latent: int, layers: int) -> None:
        super().__init__()
        self.net = _mlp(2 * latent, latent, latent, layers)

    def forward(self, aggregated: Tensor, state: Tensor) -> Tensor:
        return state + self.net(torch.cat([state, aggregated], -1))


def _fields(
    history: Tensor | Any, particle_type: Tensor | None, batch: Tensor | None, edge_index: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The tensors of a call, taken from a ``Data``/``Batch`` when one is passed as ``history``."""
    if is_graph_data(history):
        if particle_type is not None or batch is not None:
            raise ValueError("with a Data or Batch, call model(data): history, particle_type and batch come from it")
        data = history
        history, particle_type, batch = data.history, data.particle_type, getattr(data, "batch", None)
        given = data.edge_index
        # A container without edges (a window batch: the model builds its graph) gives none.
        if edge_index is None and given is not None and given.shape[1]:
            edge_index = given
    if particle_type is None:
        raise ValueError("the simulator needs each particle's type (particle_type, [N] integers)")
    return history, particle_type, batch, edge_index


class LearnedSimulator(nn.Module):
    """Predicts normalised accelerations from a position history; steps and rolls out."""

    def __init__(self, metadata: SimulatorMetadata, config: GNSConfig = GNSConfig()) -> None:
        super().__init__()
        self.config = config
        self.metadata = metadata
        dim, latent, layers = metadata.dim, config.latent_size, config.mlp_layers
        self.radius = float(config.connectivity_radius or metadata.default_connectivity_radius)
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"the connectivity radius must be a positive number, got {self.radius}")
        for name in ("vel_mean", "vel_std", "acc_mean", "acc_std"):
            self.register_buffer(name, torch.tensor(getattr(metadata, name), dtype=torch.float32), persistent=False)
        self.register_buffer("bounds", torch.tensor(metadata.bounds, dtype=torch.float32), persistent=False)
        periodic = getattr(metadata, "periodic_boundary_conditions", None) or [False] * dim
        if len(periodic) != dim:
            raise ValueError(f"periodic_boundary_conditions {periodic} must have one boolean per axis ({dim})")
        self.periodic_axes = [bool(p) for p in periodic]
        self.register_buffer("periodic", torch.tensor(self.periodic_axes), persistent=False)
        # The box's sides on periodic axes, 0 elsewhere (no wrapping there).
        side = (self.bounds[:, 1] - self.bounds[:, 0]) * self.periodic
        self.register_buffer("side", side, persistent=False)
        self.register_buffer("walled", (~self.periodic).nonzero().view(-1), persistent=False)
        for axis, (low, high) in enumerate(metadata.bounds):
            if self.periodic_axes[axis] and self.radius >= (high - low) / 2:
                raise ValueError(
                    f"the connectivity radius {self.radius:g} is not below half the periodic box's side on axis "
                    f"{axis} ({high - low:g}), where a pair of particles has more than one nearest image; "
                    "choose a smaller one (simulate train --connectivity-radius)"
                )
        self.type_embedding = nn.Embedding(config.particle_types, config.type_embedding_size)
        node_inputs = HISTORY * dim + config.type_embedding_size + 2 * (dim - sum(self.periodic_axes))
        self.node_encoder = _mlp(node_inputs, latent, latent, layers)
        self.edge_encoder = _mlp(dim + 1, latent, latent, layers)
        self.edge_updates = nn.ModuleList(_EdgeUpdate(latent, layers) for _ in range(config.message_passing_steps))
        self.node_updates = nn.ModuleList(_NodeUpdate(latent, layers) for _ in range(config.message_passing_steps))
        self.decoder = _mlp(latent, latent, dim, layers, norm=False)

    @classmethod
    def from_checkpoint(cls, checkpoint: Any) -> LearnedSimulator:
        """The simulator of a structnets checkpoint (what ``structnets.train.load_model`` calls).

        The dataset's statistics travel with the weights as plain data,
        ``checkpoint.extra["metadata"]`` (``metadata.json``'s fields), beside the config.
        """
        metadata = types.SimpleNamespace(**checkpoint.extra["metadata"])
        model = cls(metadata, GNSConfig(**checkpoint.model_config))
        model.load_state_dict(checkpoint.state_dict)
        return model

    @property
    def is_periodic(self) -> bool:
        return any(self.periodic_axes)

    def displacement(self, to: Tensor, start: Tensor) -> Tensor:
        """``to - start``, the minimum-image one on periodic axes (any shape ``[..., D]``)."""
        return minimum_image(to - start, self.side) if self.is_periodic else to - start

    def wrap(self, position: Tensor) -> Tensor:
        """Positions put back into the box on its periodic axes (unchanged elsewhere)."""
        if not self.is_periodic:
            return position
        low = self.bounds[:, 0]
        safe = torch.where(self.periodic, self.side, torch.ones_like(self.side))
        return torch.where(self.periodic, low + torch.remainder(position - low, safe), position)

    def graph(self, position: Tensor, batch: Tensor | None = None) -> Tensor:
        """The radius graph at ``position`` (across the faces of a periodic box)."""
        if not self.is_periodic:
            return radius_graph(position.detach(), self.radius, batch, max_num_neighbors=None)
        return radius_graph(
            position.detach(), self.radius, batch, max_num_neighbors=None, box=self.bounds, periodic=self.periodic
        )

    def forward(
        self,
        history: Tensor | Any,
        particle_type: Tensor | None = None,
        batch: Tensor | None = None,
        edge_index: Tensor | None = None,
    ) -> Tensor:
        """Normalised accelerations ``[N, D]`` from ``history`` ``[N, 6, D]`` (oldest first).

        Args:
            history: positions, oldest first; or a ``Data``/``Batch`` holding ``history``,
                ``particle_type`` and optionally ``batch`` and ``edge_index``.
            particle_type: ``[N]`` each particle's type.
            batch: ``[N]`` each particle's simulation, which keeps their radius graphs apart.
            edge_index: ``[2, E]`` the graph to run on (sender -> receiver); None builds the
                radius graph at ``history[:, -1]``.
        """
        history, particle_type, batch, edge_index = _fields(history, particle_type, batch, edge_index)
        position = history[:, -1]
        velocity = (self.displacement(history[:, 1:], history[:, :-1]) - self.vel_mean) / self.vel_std
        low, high = self.bounds[:, 0], self.bounds[:, 1]
        walls = torch.cat([position - low, high - position], -1).div(self.radius).clamp(-1.0, 1.0)
        if self.is_periodic:  # a periodic axis has no walls to be near
            walls = walls[:, torch.cat([self.walled, self.walled + position.shape[1]])]
        nodes = torch.cat([velocity.flatten(1), self.type_embedding(particle_type), walls], -1)
        if edge_index is None:
            edge_index = self.graph(position, batch)
        senders, receivers = edge_index
        displacement = self.displacement(position[senders], position[receivers]) / self.radius
        edges = torch.cat([displacement, displacement.norm(dim=-1, keepdim=True)], -1)
        h, e = self.node_encoder(nodes), self.edge_encoder(edges)
        processor = Synchronous(self.config.message_passing_steps)
        h, _ = propagate(self.node_updates, None, edge_index, processor, state=h, edges=e, edge_step=self.edge_updates)
        return self.decoder(h)

    def step(
        self,
        history: Tensor | Any,
        particle_type: Tensor | None = None,
        batch: Tensor | None = None,
        edge_index: Tensor | None = None,
    ) -> Tensor:
        """The next positions ``[N, D]``: semi-implicit Euler on the predicted acceleration
        (arguments as for :meth:`forward`)."""
        history, particle_type, batch, edge_index = _fields(history, particle_type, batch, edge_index)
        acceleration = self(history, particle_type, batch, edge_index) * self.acc_std + self.acc_mean
        velocity = self.displacement(history[:, -1], history[:, -2]) + acceleration
        return self.wrap(history[:, -1] + velocity)

    def target_acceleration(self, history: Tensor, target: Tensor) -> Tensor:
        """The true acceleration ``x_{t+1} - 2 x_t + x_{t-1}`` of a window (minimum-image on periodic axes)."""
        return self.displacement(target, history[:, -1]) - self.displacement(history[:, -1], history[:, -2])

    @torch.no_grad()
    def rollout(self, initial: Tensor, particle_type: Tensor, steps: int) -> Tensor:
        """``[steps, N, D]`` positions predicted from ``initial`` ``[6, N, D]``, feeding each back in."""
        history = initial.transpose(0, 1).clone()  # [N, 6, D]
        out = []
        for _ in range(steps):
            nxt = self.step(history, particle_type)
            out.append(nxt)
            history = torch.cat([history[:, 1:], nxt.unsqueeze(1)], 1)
        return torch.stack(out)
