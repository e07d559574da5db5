"""Memory-augmented networks: an LSTM controller that reads and writes an external memory.

The Neural Turing Machine (Graves, Wayne & Danihelka 2014, "Neural Turing Machines") and
the differentiable neural computer (Graves et al. 2016, "Hybrid computing using a neural
network with dynamic external memory") share one skeleton::

    x_t ──┐
          ├─► LSTMCell ─► h_t ─► Linear ─► interface ─► heads ─┬─► write M_{t-1} -> M_t
    r_{t-1}┘               │                                    └─► read  M_t -> r_t
                           └──────────────► Linear([h_t, r_t]) ─► y_t

The memory ``M`` holds ``memory_size`` words of ``word_size`` numbers. Every read and
write is a weighting over *all* addresses, so the whole machine is differentiable. The two
differ in how a head finds its address (:class:`Addressing`):

* **NTM**: content (cosine similarity to a key, sharpened by a strength), interpolation
  with the previous weighting, a circular shift, and sharpening.
* **DNC**: content for reads and writes; writes also go to *allocated* locations (those
  least used, from a usage vector that reads may free); reads also follow a *temporal link
  matrix* forwards or backwards, which records the order in which locations were written.

Both write by erase and add (the NTM's rule, which the DNC keeps):
``M_t = M_{t-1} * (1 - w e^T) + w a^T``. The controller is the core's :class:`LSTMCell`.

The addressing functions are plain functions over batched tensors, so each can be tested
alone against the paper's equation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.cells import LSTMCell

__all__ = [
    "Addressing",
    "MemoryConfig",
    "MemoryState",
    "MemoryOutput",
    "MemoryNetwork",
    "content_weighting",
    "erase_and_add",
    "shift_weighting",
    "sharpen",
    "update_usage",
    "allocation_weighting",
    "update_precedence",
    "update_link",
    "directional_weightings",
]

# Keeps sharpening away from 0 ** gamma, whose derivative in gamma (w^gamma * log w) is NaN at w = 0.
_SHARPEN_EPS = 1e-8
# Norms below this count as zero in cosine similarity (zero memory rows have similarity 0).
_COSINE_EPS = 1e-6


class Addressing(enum.Enum):
    """How heads find addresses: the Neural Turing Machine's or the DNC's mechanisms."""

    NTM = "ntm"
    DNC = "dnc"


@dataclass(frozen=True)
class MemoryConfig:
    """Sizes of a :class:`MemoryNetwork`.

    Attributes:
        input_size: features per input step.
        output_size: features per output step.
        hidden_size: the LSTM controller's state size.
        memory_size: number of memory locations ``N``.
        word_size: numbers per location ``W``.
        num_reads: read heads ``R``.
        addressing: NTM or DNC addressing.
        shift_range: NTM only: a head may shift its focus by ``-shift_range..shift_range``.
    """

    input_size: int
    output_size: int
    hidden_size: int = 100
    memory_size: int = 32
    word_size: int = 16
    num_reads: int = 1
    addressing: Addressing = Addressing.DNC
    shift_range: int = 1

    def __post_init__(self) -> None:
        for name in ("input_size", "output_size", "hidden_size", "memory_size", "word_size", "num_reads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.addressing, Addressing):
            raise TypeError(f"addressing must be a structnets.models.memory.Addressing, got {self.addressing!r}")
        if self.shift_range < 0 or 2 * self.shift_range + 1 > self.memory_size:
            raise ValueError(
                f"shift_range must lie in 0..(memory_size - 1) // 2 = {(self.memory_size - 1) // 2}, "
                f"got {self.shift_range}"
            )


class MemoryState(NamedTuple):
    """Everything a :class:`MemoryNetwork` carries from one step to the next.

    ``usage``, ``precedence`` and ``link`` are the DNC's; they stay zero under NTM addressing.

    Shapes:
        controller: ``(h, c)``, each ``[B, hidden_size]``.
        memory: ``[B, N, W]``; read_vectors: ``[B, R, W]``; read_weights: ``[B, R, N]``;
        write_weights, usage, precedence: ``[B, N]``; link: ``[B, N, N]``.
    """

    controller: tuple[Tensor, Tensor]
    memory: Tensor
    read_vectors: Tensor
    read_weights: Tensor
    write_weights: Tensor
    usage: Tensor
    precedence: Tensor
    link: Tensor


class MemoryOutput(NamedTuple):
    """What :meth:`MemoryNetwork.forward` returns.

    Shapes:
        outputs: ``[B, T, output_size]`` (logits; the tasks decide the loss).
        read_weights: ``[B, T, R, N]``; write_weights: ``[B, T, N]``: every step's weightings,
            for plots.
    """

    outputs: Tensor
    state: MemoryState
    read_weights: Tensor
    write_weights: Tensor


# ---------------------------------------------------------------------------------------------
# Addressing, one function per equation
# ---------------------------------------------------------------------------------------------


def content_weighting(memory: Tensor, keys: Tensor, strengths: Tensor) -> Tensor:
    """Content-based addressing: ``w[h, i] = softmax_i(beta_h * cos(k_h, M_i))``.

    NTM eq. 5-6; DNC's ``C(M, k, beta)``.

    Shapes:
        memory: ``[B, N, W]``; keys: ``[B, H, W]``; strengths: ``[B, H]``; returns ``[B, H, N]``.
    """
    similarity = torch.bmm(F.normalize(keys, dim=-1, eps=_COSINE_EPS), F.normalize(memory, dim=-1, eps=_COSINE_EPS).mT)
    return torch.softmax(strengths.unsqueeze(-1) * similarity, dim=-1)


def erase_and_add(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    """The NTM's write (eq. 3-4): ``M_t = M_{t-1} * (1 - w e^T) + w a^T``.

    Each location ``i`` is erased by ``w_i * e`` (elementwise, ``e`` in [0, 1]) and then
    receives ``w_i * a``.

    Shapes:
        memory: ``[B, N, W]``; weights: ``[B, N]``; erase, add: ``[B, W]``; returns ``[B, N, W]``.
    """
    w = weights.unsqueeze(-1)
    return memory * (1 - w * erase.unsqueeze(1)) + w * add.unsqueeze(1)


def shift_weighting(weights: Tensor, shift: Tensor) -> Tensor:
    """NTM's circular convolution (eq. 8): ``w~_i = sum_k s_k w_{(i - k) mod N}``.

    ``shift`` is a distribution over the offsets ``-S..S`` (in that order), ``2S + 1`` entries.

    Shapes:
        weights: ``[B, H, N]``; shift: ``[B, H, 2S + 1]``; returns ``[B, H, N]``.
    """
    reach = (shift.shape[-1] - 1) // 2
    rolled = torch.stack([weights.roll(offset, dims=-1) for offset in range(-reach, reach + 1)], dim=-1)
    return (rolled * shift.unsqueeze(-2)).sum(-1)


def sharpen(weights: Tensor, gamma: Tensor) -> Tensor:
    """NTM's sharpening (eq. 9): ``w_i = w~_i^gamma / sum_j w~_j^gamma``, ``gamma >= 1``.

    Shapes:
        weights: ``[B, H, N]``; gamma: ``[B, H]``; returns ``[B, H, N]``.
    """
    powered = (weights + _SHARPEN_EPS).pow(gamma.unsqueeze(-1))
    return powered / powered.sum(-1, keepdim=True)


def update_usage(usage: Tensor, write_weights: Tensor, read_weights: Tensor, free_gates: Tensor) -> Tensor:
    """DNC usage (Methods, "Dynamic memory allocation").

    ``psi = prod_r (1 - f_r w^r_{t-1,r})`` is how much each location is retained after the
    read heads free what they read; ``u_t = (u_{t-1} + w^w_{t-1} - u_{t-1} * w^w_{t-1}) * psi``.

    Shapes:
        usage, write_weights: ``[B, N]`` (the previous step's); read_weights: ``[B, R, N]``
        (previous step's); free_gates: ``[B, R]``; returns ``[B, N]``.
    """
    retention = torch.prod(1 - free_gates.unsqueeze(-1) * read_weights, dim=1)
    return (usage + write_weights - usage * write_weights) * retention


def allocation_weighting(usage: Tensor) -> Tensor:
    """DNC allocation: ``a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i]``, ``phi`` = usage ascending.

    The least used location gets most of the weight; a location is reached only as far as
    every less used one is in use. Ties are broken by address (a stable sort), so a fresh
    memory is filled from location 0 upwards. The weights sum to ``1 - prod_i u_i``.

    Shapes:
        usage: ``[B, N]``; returns ``[B, N]``.
    """
    sorted_usage, order = torch.sort(usage, dim=-1, stable=True)
    # Exclusive cumulative product: the product of the usages sorted before each location.
    before = torch.cumprod(torch.cat([torch.ones_like(sorted_usage[:, :1]), sorted_usage[:, :-1]], dim=-1), dim=-1)
    return torch.zeros_like(usage).scatter(-1, order, (1 - sorted_usage) * before)


def update_precedence(precedence: Tensor, write_weights: Tensor) -> Tensor:
    """DNC precedence: ``p_t = (1 - sum_i w^w_i) p_{t-1} + w^w``, where the last write went.

    Shapes:
        precedence, write_weights: ``[B, N]``; returns ``[B, N]``.
    """
    return (1 - write_weights.sum(-1, keepdim=True)) * precedence + write_weights


def update_link(link: Tensor, precedence: Tensor, write_weights: Tensor) -> Tensor:
    """DNC temporal links: ``L[i, j] = (1 - w_i - w_j) L[i, j] + w_i p_j``, ``L[i, i] = 0``.

    ``L[i, j]`` is the degree to which location ``i`` was written right after location ``j``.
    ``precedence`` is the previous step's ``p_{t-1}``; ``write_weights`` this step's ``w^w_t``.

    Shapes:
        link: ``[B, N, N]``; precedence, write_weights: ``[B, N]``; returns ``[B, N, N]``.
    """
    w_i = write_weights.unsqueeze(-1)
    w_j = write_weights.unsqueeze(-2)
    updated = (1 - w_i - w_j) * link + w_i * precedence.unsqueeze(-2)
    return updated * (1 - torch.eye(link.shape[-1], dtype=link.dtype, device=link.device))


def directional_weightings(link: Tensor, read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """DNC forward and backward weightings: ``f = L w^r``, ``b = L^T w^r`` per read head.

    Forward moves each head to the locations written after the ones it read, backward to
    those written before.

    Shapes:
        link: ``[B, N, N]``; read_weights: ``[B, R, N]``; returns two ``[B, R, N]``.
    """
    forward = torch.bmm(read_weights, link.mT)  # f[r, i] = sum_j L[i, j] w[r, j]
    backward = torch.bmm(read_weights, link)  # b[r, j] = sum_i L[i, j] w[r, i]
    return forward, backward


def _oneplus(x: Tensor) -> Tensor:
    """``1 + softplus(x)``: strengths in [1, inf) (DNC's oneplus)."""
    return 1 + F.softplus(x)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class MemoryNetwork(nn.Module):
    """An LSTM controller with an external memory: an NTM or a DNC (see the module docstring).

    Per step, with ``r_{t-1}`` the previous reads:
    ``(h_t, c_t) = LSTMCell([x_t, r_{t-1}], (h_{t-1}, c_{t-1}))``; the interface vector
    ``xi_t = W_xi h_t`` sets the heads; the write head writes ``M_{t-1} -> M_t``; the read
    heads read ``r_t = w^r_t M_t``; ``y_t = W_y [h_t, r_t]``.

    Args:
        config: sizes and the addressing scheme.

    Shapes:
        inputs: ``[B, T, input_size]``; see :class:`MemoryOutput` for the outputs.
    """

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__()
        self.config = config
        reads, width = config.num_reads, config.word_size
        self.controller = LSTMCell(config.input_size + reads * width, config.hidden_size)
        if config.addressing is Addressing.DNC:
            # read keys, read strengths, write key, write strength, erase, write vector,
            # free gates, allocation gate, write gate, read modes (backward, content, forward)
            self._interface_sizes = [reads * width, reads, width, 1, width, width, reads, 1, 1, 3 * reads]
        else:
            # per head (reads, then the write head): key, strength, gate, shift, sharpening;
            # then the write head's erase and add vectors
            heads = reads + 1
            shifts = 2 * config.shift_range + 1
            self._interface_sizes = [heads * width, heads, heads, heads * shifts, heads, width, width]
        self.interface = nn.Linear(config.hidden_size, sum(self._interface_sizes))
        self.output = nn.Linear(config.hidden_size + reads * width, config.output_size)

    def initial_state(self, batch_size: int, like: Tensor) -> MemoryState:
        """The state before the first step: zero memory, controller and DNC bookkeeping.

        DNC heads start with zero weightings (the paper's). NTM heads start focused on
        location 0: interpolation and shifting act on the previous weighting, and a zero
        weighting would give them nothing to move.
        """
        cfg = self.config
        zeros = like.new_zeros
        n = cfg.memory_size
        read_weights = zeros(batch_size, cfg.num_reads, n)
        write_weights = zeros(batch_size, n)
        if cfg.addressing is Addressing.NTM:
            read_weights[..., 0] = 1
            write_weights[..., 0] = 1
        return MemoryState(
            controller=(zeros(batch_size, cfg.hidden_size), zeros(batch_size, cfg.hidden_size)),
            memory=zeros(batch_size, n, cfg.word_size),
            read_vectors=zeros(batch_size, cfg.num_reads, cfg.word_size),
            read_weights=read_weights,
            write_weights=write_weights,
            usage=zeros(batch_size, n),
            precedence=zeros(batch_size, n),
            link=zeros(batch_size, n, n),
        )

    def step(self, input: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState]:
        """One step: ``input`` ``[B, input_size]`` -> (output ``[B, output_size]``, new state)."""
        batch = input.shape[0]
        controller_input = torch.cat([input, state.read_vectors.reshape(batch, -1)], dim=-1)
        h, c = self.controller(controller_input, state.controller)
        parts = torch.split(self.interface(h), self._interface_sizes, dim=-1)
        if self.config.addressing is Addressing.DNC:
            state = self._dnc_memory(parts, state)
        else:
            state = self._ntm_memory(parts, state)
        read_vectors = torch.bmm(state.read_weights, state.memory)  # (B, R, W)
        output = self.output(torch.cat([h, read_vectors.reshape(batch, -1)], dim=-1))
        return output, state._replace(controller=(h, c), read_vectors=read_vectors)

    def _dnc_memory(self, parts: tuple[Tensor, ...], state: MemoryState) -> MemoryState:
        """The DNC's write then read (Graves et al. 2016, Methods)."""
        batch = parts[0].shape[0]
        reads, width = self.config.num_reads, self.config.word_size
        (
            read_keys,
            read_strengths,
            write_key,
            write_strength,
            erase,
            write_vector,
            free,
            alloc_gate,
            write_gate,
            modes,
        ) = parts
        usage = update_usage(state.usage, state.write_weights, state.read_weights, torch.sigmoid(free))
        allocation = allocation_weighting(usage)
        write_content = content_weighting(state.memory, write_key.unsqueeze(1), _oneplus(write_strength)).squeeze(1)
        alloc_gate, write_gate = torch.sigmoid(alloc_gate), torch.sigmoid(write_gate)
        write_weights = write_gate * (alloc_gate * allocation + (1 - alloc_gate) * write_content)
        memory = erase_and_add(state.memory, write_weights, torch.sigmoid(erase), write_vector)

        link = update_link(state.link, state.precedence, write_weights)
        precedence = update_precedence(state.precedence, write_weights)
        forward, backward = directional_weightings(link, state.read_weights)
        read_content = content_weighting(memory, read_keys.view(batch, reads, width), _oneplus(read_strengths))
        modes = torch.softmax(modes.view(batch, reads, 3), dim=-1)
        read_weights = modes[..., 0:1] * backward + modes[..., 1:2] * read_content + modes[..., 2:3] * forward
        return state._replace(
            memory=memory,
            read_weights=read_weights,
            write_weights=write_weights,
            usage=usage,
            precedence=precedence,
            link=link,
        )

    def _ntm_memory(self, parts: tuple[Tensor, ...], state: MemoryState) -> MemoryState:
        """The NTM's addressing (Graves et al. 2014, sec. 3.3) for every head, write then read."""
        batch = parts[0].shape[0]
        heads, width = self.config.num_reads + 1, self.config.word_size
        keys, strengths, gates, shifts, sharpening, erase, add = parts
        previous = torch.cat([state.read_weights, state.write_weights.unsqueeze(1)], dim=1)  # (B, R + 1, N)

        def address(memory: Tensor, head: slice) -> Tensor:
            content = content_weighting(memory, keys.view(batch, heads, width)[:, head], _oneplus(strengths[:, head]))
            gate = torch.sigmoid(gates[:, head]).unsqueeze(-1)
            interpolated = gate * content + (1 - gate) * previous[:, head]
            shift = torch.softmax(shifts.view(batch, heads, -1)[:, head], dim=-1)
            return sharpen(shift_weighting(interpolated, shift), _oneplus(sharpening[:, head]))

        write_weights = address(state.memory, slice(heads - 1, heads)).squeeze(1)
        memory = erase_and_add(state.memory, write_weights, torch.sigmoid(erase), add)
        read_weights = address(memory, slice(0, heads - 1))
        return state._replace(memory=memory, read_weights=read_weights, write_weights=write_weights)

    def forward(self, inputs: Tensor, state: MemoryState | None = None) -> MemoryOutput:
        """Runs every step of ``inputs`` ``[B, T, input_size]`` from ``state`` (default: fresh)."""
        if inputs.dim() != 3 or inputs.shape[-1] != self.config.input_size:
            raise ValueError(
                f"expected inputs of shape [batch, time, {self.config.input_size}], got {tuple(inputs.shape)}"
            )
        if inputs.shape[1] == 0:
            raise ValueError("inputs must have at least one time step")
        if state is None:
            state = self.initial_state(inputs.shape[0], inputs)
        outputs, read_weights, write_weights = [], [], []
        for step_input in inputs.unbind(1):
            output, state = self.step(step_input, state)
            outputs.append(output)
            read_weights.append(state.read_weights)
            write_weights.append(state.write_weights)
        return MemoryOutput(
            outputs=torch.stack(outputs, 1),
            state=state,
            read_weights=torch.stack(read_weights, 1),
            write_weights=torch.stack(write_weights, 1),
        )
