"""The learned simulator of Sanchez-Gonzalez et al. (2020): encode, process, decode.

::

    positions x_{t-5..t} ──► node features: normalised velocities (5 steps), particle-type
                             embedding, distances to the walls (clipped at the radius)
    radius graph at x_t ───► edge features: displacement and distance, over the radius
        encoder: MLPs to latent size L ──► processor: M interaction networks (residual),
        each one round of the core's synchronous schedule ──► decoder: MLP to the
        normalised acceleration ──► x_{t+1} = x_t + (x_t - x_{t-1}) + a   (semi-implicit Euler)

Each interaction network updates every edge from its two ends, ``e' = e + MLP([e, v_s,
v_r])``, then every node from the sum of its incoming edges, ``v' = v + MLP([v, sum e'])``;
the node update runs under :func:`structnets.propagate_rounds` with the edge update as its
message function. The blocks do not share weights, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.propagate import propagate_rounds
from ..graphs.neighbors import radius_graph
from ..physics.particles import SimulationMetadata

__all__ = ["GNSConfig", "LearnedSimulator", "mlp"]

HISTORY = 5  # velocities in the input, so 6 positions


def mlp(inputs: int, hidden: int, outputs: int, layers: int = 2, norm: bool = True) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear output (LayerNorm'd if ``norm``)."""
    parts: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        parts += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    parts.append(nn.Linear(width, outputs))
    if norm:
        parts.append(nn.LayerNorm(outputs))
    return nn.Sequential(*parts)


@dataclass(frozen=True)
class GNSConfig:
    latent_size: int = 128
    message_passing_steps: int = 10
    mlp_layers: int = 2
    particle_types: int = 9
    type_embedding_size: int = 16


class _NodeUpdate(nn.Module):
    """``v' = v + MLP([v, aggregated edges])``, called by propagate_rounds as cell(aggregated, state)."""

    def __init__(self, latent: int, layers: int) -> None:
        super().__init__()
        self.net = mlp(2 * latent, latent, latent, layers)

    def forward(self, aggregated: Tensor, state: Tensor) -> Tensor:
        return state + self.net(torch.cat([state, aggregated], -1))


class LearnedSimulator(nn.Module):
    """Predicts normalised accelerations from a position history; steps and rolls out."""

    def __init__(self, metadata: SimulationMetadata, config: GNSConfig = GNSConfig()) -> None:
        super().__init__()
        self.config = config
        self.metadata = metadata
        dim, latent, layers = metadata.dim, config.latent_size, config.mlp_layers
        self.radius = float(metadata.default_connectivity_radius)
        for name in ("vel_mean", "vel_std", "acc_mean", "acc_std"):
            self.register_buffer(name, torch.tensor(getattr(metadata, name), dtype=torch.float32), persistent=False)
        self.register_buffer("bounds", torch.tensor(metadata.bounds, dtype=torch.float32), persistent=False)
        self.type_embedding = nn.Embedding(config.particle_types, config.type_embedding_size)
        node_inputs = HISTORY * dim + config.type_embedding_size + 2 * dim
        self.node_encoder = mlp(node_inputs, latent, latent, layers)
        self.edge_encoder = mlp(dim + 1, latent, latent, layers)
        self.edge_updates = nn.ModuleList(
            mlp(3 * latent, latent, latent, layers) for _ in range(config.message_passing_steps)
        )
        self.node_updates = nn.ModuleList(_NodeUpdate(latent, layers) for _ in range(config.message_passing_steps))
        self.decoder = mlp(latent, latent, dim, layers, norm=False)

    def graph(self, position: Tensor, batch: Tensor | None = None) -> Tensor:
        return radius_graph(position.detach(), self.radius, batch)

    def forward(self, history: Tensor, particle_type: Tensor, batch: Tensor | None = None) -> Tensor:
        """Normalised accelerations ``[N, D]`` from ``history`` ``[N, 6, D]`` (oldest first)."""
        position = history[:, -1]
        velocity = (history[:, 1:] - history[:, :-1] - self.vel_mean) / self.vel_std
        low, high = self.bounds[:, 0], self.bounds[:, 1]
        walls = torch.cat([position - low, high - position], -1).div(self.radius).clamp(-1.0, 1.0)
        nodes = torch.cat([velocity.flatten(1), self.type_embedding(particle_type), walls], -1)
        edge_index = self.graph(position, batch)
        senders, receivers = edge_index
        displacement = (position[senders] - position[receivers]) / self.radius
        edges = torch.cat([displacement, displacement.norm(dim=-1, keepdim=True)], -1)
        h, e = self.node_encoder(nodes), self.edge_encoder(edges)
        for edge_update, node_update in zip(self.edge_updates, self.node_updates):
            updated: dict[str, Tensor] = {}

            def message(state: Tensor, index: Tensor, attr: Tensor | None, net=edge_update, store=updated) -> Tensor:
                store["e"] = attr + net(torch.cat([attr, state[index[0]], state[index[1]]], -1))
                return store["e"]

            h = propagate_rounds(node_update, h, edge_index, 1, message=message, edge_attr=e)
            e = updated["e"]
        return self.decoder(h)

    def step(self, history: Tensor, particle_type: Tensor, batch: Tensor | None = None) -> Tensor:
        """The next positions ``[N, D]``: semi-implicit Euler on the predicted acceleration."""
        acceleration = self(history, particle_type, batch) * self.acc_std + self.acc_mean
        velocity = history[:, -1] - history[:, -2] + acceleration
        return history[:, -1] + velocity

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
