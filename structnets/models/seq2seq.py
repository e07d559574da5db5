"""Sequence to sequence with attention (Bahdanau et al. 2015; Luong et al. 2015) on the core's cells.

::

    source ─► Embedding ─► sn.RNN (stacked, bidirectional) ─┬─► h_s: keys and values on the edges s -> b (built once)
                                                            └─► final states: the decoder's first state
    for t = 1 .. T:
        [Embedding(y_{t-1}); h~_{t-1}] ─► cells, one step per layer ─► h_t
        a_ts = softmax over b's edges of score(h_t, h_s),  c_t = sum_s a_ts h_s
        h~_t = tanh(W_c [c_t; h_t])                         fed to step t + 1 (input feeding)
        logits_t = W_s h~_t + b_s

The encoder is the core's :class:`~structnets.core.rnn.RNN` over the padded source with its
lengths; the decoder is a stack of the core's cells, stepped once per output token, and its
previous attentional vector ``h~_{t-1}`` is joined to the next input embedding (Luong's
input feeding). Attention is message passing from the encoder's nodes to the decoder's node
of each row along the edges of the padded batch (:mod:`structnets.nn.attention`), built once
per batch: padding is no edge, so it gets no weight. A bidirectional encoder has
``hidden_size // 2`` units per direction, so its states and its final states (both directions
joined, layer by layer) are ``hidden_size`` wide: they are the decoder's keys and its initial
state as they are. The ADDITIVE score is Bahdanau's function used in Luong's decoder (the
query is the current state ``h_t``).

With ``attention=None`` it is Sutskever et al. 2014's encoder-decoder: no attention, no
input feeding, ``logits_t = W_s h_t`` from the top cell, the source reaching the decoder
only through the encoder's final states.

Training is teacher forced (:meth:`Seq2Seq.forward`, :func:`sequence_loss`); inference is
greedy (:meth:`Seq2Seq.greedy`, which ``torch.export`` takes through :class:`GreedyDecoder`)
or a beam search ranked by ``score / length ** length_penalty``
(:meth:`Seq2Seq.beam_search`). :meth:`Seq2Seq.encode` and :meth:`Seq2Seq.step` are the pieces
for decoding step by step elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.cells import ChainCell, State
from ..core.rnn import RNN
from ..nn.attention import Attention, AttentionMemory, AttentionScore

__all__ = [
    "CellKind",
    "Seq2SeqConfig",
    "Seq2Seq",
    "DecoderState",
    "EncoderOutput",
    "GreedyDecoder",
    "sequence_loss",
    "decoder_inputs",
]

CellKind = ChainCell
"""The recurrent cell of encoder and decoder: the core's :class:`~structnets.core.cells.ChainCell`."""


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Vocabularies, sizes and special tokens of a :class:`Seq2Seq`.

    Attributes:
        source_vocab: number of source tokens.
        target_vocab: number of target tokens (the special tokens among them).
        embedding_size: size of the source and target embeddings.
        hidden_size: state size of the decoder, and of the encoder (both directions together).
        num_layers: stacked layers of encoder and decoder.
        bidirectional: run the encoder in both directions (hidden_size // 2 units each).
        cell: the recurrent cell of encoder and decoder (lstm, gru, elman).
        attention: the attention score (additive, dot, general); none for no attention
            (Sutskever et al. 2014: the encoder's final states are all the decoder reads of
            the source, and the logits are read from the top cell's output).
        input_feeding: join the previous attentional vector to the next input embedding
            (needs attention).
        dropout: dropout, in training, of embeddings, between stacked layers and of the
            attentional vector.
        pad: the padding token (source and target).
        bos: the token that starts every target.
        eos: the token that ends every target.
    """

    source_vocab: int
    target_vocab: int
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 2
    bidirectional: bool = True
    cell: ChainCell = ChainCell.LSTM
    attention: AttentionScore | None = AttentionScore.GENERAL
    input_feeding: bool = True
    dropout: float = 0.0
    pad: int = 0
    bos: int = 1
    eos: int = 2

    def __post_init__(self) -> None:
        for name in ("source_vocab", "target_vocab", "embedding_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(f"a bidirectional encoder splits hidden_size in two: got the odd {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.attention is None and self.input_feeding:
            raise ValueError(
                "input feeding joins the previous attentional vector to the next input, and attention is none: "
                "turn input feeding off (--no-input-feeding) or choose an attention score"
            )
        for name in ("pad", "bos", "eos"):
            if not 0 <= getattr(self, name) < self.target_vocab:
                raise ValueError(
                    f"{name} = {getattr(self, name)} is no token of a target vocabulary of {self.target_vocab}"
                )
        if not 0 <= self.pad < self.source_vocab:
            raise ValueError(f"pad = {self.pad} is no token of a source vocabulary of {self.source_vocab}")
        if len({self.pad, self.bos, self.eos}) < 3:
            raise ValueError(f"pad, bos and eos must be three different tokens, got {self.pad}, {self.bos}, {self.eos}")


class DecoderState(NamedTuple):
    """The decoder between two steps.

    Attributes:
        cells: each layer's state, ``[B, hidden_size]`` (a tuple ``(h, c)`` for LSTM cells).
        feed: the last attentional vector ``h~``, ``[B, hidden_size]`` (zeros before the first step).
    """

    cells: tuple[State, ...]
    feed: Tensor

    def index_select(self, rows: Tensor) -> DecoderState:
        """The states of ``rows`` (reordering or repeating a batch, as beam search does)."""

        def pick(state: State) -> State:
            return (
                tuple(s.index_select(0, rows) for s in state)
                if isinstance(state, tuple)
                else state.index_select(0, rows)
            )

        return DecoderState(tuple(pick(state) for state in self.cells), self.feed.index_select(0, rows))


class EncoderOutput(NamedTuple):
    """What :meth:`Seq2Seq.encode` gives the decoder: the attention's memory and the first state.

    Attributes:
        memory: the encoder states as per-edge keys and values, edges ``s -> b`` (none
            without attention).
        state: the decoder's state before its first step.
    """

    memory: AttentionMemory | None
    state: DecoderState


def sequence_loss(logits: Tensor, target_out: Tensor, pad: int) -> Tensor:
    """Cross-entropy of ``logits`` ``[B, T, V]`` against ``target_out`` ``[B, T]``, the mean over non-pad tokens."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_out.reshape(-1), ignore_index=pad)


def decoder_inputs(target_out: Tensor, bos: int) -> Tensor:
    """The teacher-forced inputs for ``target_out`` ``[B, T]``: ``bos`` then the targets shifted right by one."""
    return torch.cat([target_out.new_full((target_out.shape[0], 1), bos), target_out[:, :-1]], 1)


def _top(state: State) -> Tensor:
    return state[0] if isinstance(state, tuple) else state


class Seq2Seq(nn.Module):
    """An attentional encoder-decoder: ``p(y_t | y_<t, x) = softmax(W_s h~_t + b_s)``,
    ``h~_t = tanh(W_c [c_t; h_t])``, ``c_t = sum_s a_ts h_s`` (see the module docstring).

    Shapes:
        source: ``[B, S]`` tokens, padded; source_lengths: ``[B]`` integers in ``[1, S]``;
        target_in: ``[B, T]`` (``bos`` first); logits: ``[B, T, target_vocab]``; decoded
        sequences: ``[B, max_length]``, ``eos`` then ``pad``.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        hidden, directions = config.hidden_size, 2 if config.bidirectional else 1
        cell = config.cell.cls
        self.source_embedding = nn.Embedding(config.source_vocab, config.embedding_size, padding_idx=config.pad)
        self.target_embedding = nn.Embedding(config.target_vocab, config.embedding_size, padding_idx=config.pad)
        self.encoder = RNN(
            config.embedding_size,
            hidden // directions,
            config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
            cell=cell,
        )
        first_input = config.embedding_size + (hidden if config.input_feeding else 0)
        self.decoder = nn.ModuleList(
            [cell(first_input if layer == 0 else hidden, hidden) for layer in range(config.num_layers)]
        )
        # Without attention the top cell's output is the attentional vector itself.
        self.attention = Attention(config.attention, hidden, hidden) if config.attention is not None else None
        self.combine = nn.Linear(2 * hidden, hidden, bias=False) if config.attention is not None else None  # W_c
        self.generator = nn.Linear(hidden, config.target_vocab)
        self.dropout = nn.Dropout(config.dropout)

    # ------------------------------------------------------------------ pieces
    def encode(self, source: Tensor, source_lengths: Tensor, *, repeat: int = 1) -> EncoderOutput:
        """The attention's memory and the decoder's first state for a source batch.

        With ``repeat`` > 1 every row is decoded ``repeat`` times (rows ``b * repeat + k``), as
        beam search needs; the encoder still runs once per row.
        """
        embedded = self.dropout(self.source_embedding(source))
        states, final = self.encoder(embedded, lengths=source_lengths)
        state = DecoderState(self._layer_states(final), states.new_zeros(states.shape[0], self.config.hidden_size))
        if repeat > 1:
            rows = torch.arange(states.shape[0], device=states.device).repeat_interleave(repeat)
            states, source_lengths = states.index_select(0, rows), source_lengths.to(rows.device).index_select(0, rows)
            state = state.index_select(rows)
        if self.attention is None:
            return EncoderOutput(None, state)
        return EncoderOutput(self.attention.padded_memory(states, states, source_lengths), state)

    def _layer_states(self, final: State) -> tuple[State, ...]:
        """The encoder's final states per layer, both directions joined: the decoder's first state."""
        layers, directions = self.config.num_layers, 2 if self.config.bidirectional else 1

        def joined(part: Tensor) -> Tensor:  # [layers * D, B, hidden / D], layer-major -> [layers, B, hidden]
            return part.view(layers, directions, part.shape[1], -1).transpose(1, 2).reshape(layers, part.shape[1], -1)

        if isinstance(final, tuple):
            return tuple(zip(*(joined(part).unbind(0) for part in final)))
        return joined(final).unbind(0)

    def _advance(
        self, embedded: Tensor, state: DecoderState, memory: AttentionMemory | None
    ) -> tuple[Tensor, DecoderState]:
        """One decoder step from the embedded previous token: ``(h~_t, state)``."""
        layer_input = torch.cat([embedded, state.feed], -1) if self.config.input_feeding else embedded
        cells = []
        for layer, cell in enumerate(self.decoder):
            if layer:
                layer_input = self.dropout(layer_input)
            new = cell(layer_input, state.cells[layer])
            cells.append(new)
            layer_input = _top(new)
        if self.attention is None or memory is None:
            attentional = self.dropout(layer_input)
        else:
            context, _ = self.attention.attend(layer_input, memory)
            attentional = self.dropout(torch.tanh(self.combine(torch.cat([context, layer_input], -1))))
        return attentional, DecoderState(tuple(cells), attentional)

    def step(self, token: Tensor, state: DecoderState, encoded: EncoderOutput) -> tuple[Tensor, DecoderState]:
        """One decoder step: the logits ``[B, target_vocab]`` of the token after ``token`` ``[B]``, and the new state.

        Start from ``encoded.state`` with ``token`` = ``bos``.
        """
        attentional, state = self._advance(self.dropout(self.target_embedding(token)), state, encoded.memory)
        return self.generator(attentional), state

    # ------------------------------------------------------------------ training
    def forward(self, source: Tensor, source_lengths: Tensor, target_in: Tensor) -> Tensor:
        """Teacher-forced logits ``[B, T, target_vocab]``: step ``t`` reads the gold ``target_in[:, t]``."""
        encoded = self.encode(source, source_lengths)
        embedded = self.dropout(self.target_embedding(target_in))
        state, outputs = encoded.state, []
        for t in range(target_in.shape[1]):
            attentional, state = self._advance(embedded[:, t], state, encoded.memory)
            outputs.append(attentional)
        return self.generator(torch.stack(outputs, 1))  # one product for all steps

    # ------------------------------------------------------------------ inference
    def greedy(self, source: Tensor, source_lengths: Tensor, max_length: int) -> Tensor:
        """The most likely next token at every step, ``[B, max_length]``: each row's ``eos``, then ``pad``.

        ``pad`` and ``bos`` are never predicted. In eager mode the loop stops once every row
        has ended; traced (``torch.export``) it runs ``max_length`` steps, with no branch on
        tensor values.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        encoded = self.encode(source, source_lengths)
        pad, eos = self.config.pad, self.config.eos
        token = self._bos(source, encoded.state.feed.shape[0])
        done = torch.zeros_like(token, dtype=torch.bool)
        state, tokens = encoded.state, []
        never = self._never_predicted(encoded.state.feed)
        for _ in range(max_length):
            logits, state = self.step(token, state, encoded)
            token = torch.where(done, torch.full_like(token, pad), (logits + never).argmax(-1))
            tokens.append(token)
            done = done | (token == eos)
            if not torch.compiler.is_exporting() and bool(done.all()):
                break
        out = torch.stack(tokens, 1)
        return F.pad(out, (0, max_length - out.shape[1]), value=pad)

    def _bos(self, source: Tensor, rows: int) -> Tensor:
        """``[rows]`` of ``bos``, the first input token; the source's dtype and device.

        A hook for encoders whose source is no token tensor (:class:`~structnets.models.Tree2Seq`).
        """
        return source.new_full((rows,), self.config.bos)

    def _never_predicted(self, like: Tensor) -> Tensor:
        """``[target_vocab]``: ``-inf`` at ``pad`` and ``bos``, which decoding never emits, else zero."""
        never = like.new_zeros(self.config.target_vocab)
        return never.index_fill(0, torch.tensor([self.config.pad, self.config.bos], device=like.device), -math.inf)

    @torch.no_grad()
    def beam_search(
        self, source: Tensor, source_lengths: Tensor, max_length: int, width: int = 5, length_penalty: float = 1.0
    ) -> Tensor:
        """The best of ``width`` hypotheses per row, ``[B, max_length]`` (``eos``, then ``pad``).

        A hypothesis of ``n`` tokens (its ``eos`` included; ``max_length`` if it never ends)
        and log-probability ``score`` (each step's softmax taken over the tokens decoding may
        emit: all but ``pad`` and ``bos``) ranks by ``score / n ** length_penalty``, at every step
        and at the end; ``length_penalty = 0`` ranks by the log-probability alone. Ended
        hypotheses stay in the beam at their score. With ``width = 1`` this is greedy decoding.
        """
        if width < 1 or max_length < 1:
            raise ValueError(f"width and max_length must be positive, got {width} and {max_length}")
        vocab, pad, eos = self.config.target_vocab, self.config.pad, self.config.eos
        encoded = self.encode(source, source_lengths, repeat=width)
        state = encoded.state
        batch, dtype = state.feed.shape[0] // width, state.feed.dtype
        bos = self._bos(source, batch * width)
        # Beam 0 alone is alive at the start, so the first step expands one hypothesis, not width copies.
        scores = torch.full((batch, width), -math.inf, dtype=dtype, device=state.feed.device)
        scores[:, 0] = 0
        lengths = torch.zeros(batch, width, dtype=dtype, device=state.feed.device)
        done = torch.zeros(batch, width, dtype=torch.bool, device=state.feed.device)
        history = bos.new_zeros(batch, width, 0)
        ended = torch.full((vocab,), -math.inf, dtype=dtype, device=state.feed.device)
        ended[pad] = 0  # an ended hypothesis continues with pad, at no cost
        never = self._never_predicted(state.feed)
        offsets = torch.arange(batch, device=state.feed.device).unsqueeze(1) * width
        token = bos
        for t in range(max_length):
            logits, state = self.step(token, state, encoded)
            log_probs = (logits + never).log_softmax(-1).view(batch, width, vocab)
            log_probs = torch.where(done.unsqueeze(-1), ended, log_probs)
            candidates = (scores.unsqueeze(-1) + log_probs).view(batch, width * vocab)
            candidate_lengths = torch.where(done, lengths, lengths.new_full((), t + 1)).repeat_interleave(vocab, 1)
            chosen = (candidates / candidate_lengths**length_penalty).topk(width, 1).indices
            beam, word = chosen // vocab, chosen % vocab
            scores, lengths = candidates.gather(1, chosen), candidate_lengths.gather(1, chosen)
            done = done.gather(1, beam) | (word == eos)
            history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand_as(history)), word.unsqueeze(-1)], -1)
            state = state.index_select((beam + offsets).view(-1))
            token = word.view(-1)
            if bool(done.all()):
                break
        best = (scores / lengths**length_penalty).argmax(1)
        out = history[torch.arange(batch, device=state.feed.device), best]
        return F.pad(out, (0, max_length - out.shape[1]), value=pad)

    def exportable(self, max_length: int) -> GreedyDecoder:
        """Greedy decoding of at most ``max_length`` tokens as a module for ``torch.export`` (shares parameters)."""
        return GreedyDecoder(self, max_length)


class GreedyDecoder(nn.Module):
    """``forward(source, source_lengths)`` = ``model.greedy(source, source_lengths, max_length)``, for torch.export.

    Batch and source length may be declared dynamic (:meth:`dynamic_shapes`); the program runs
    ``max_length`` decoder steps.
    """

    def __init__(self, model: Seq2Seq, max_length: int) -> None:
        super().__init__()
        self.model = model
        self.max_length = max_length

    def forward(self, source: Tensor, source_lengths: Tensor) -> Tensor:
        return self.model.greedy(source, source_lengths, self.max_length)

    @staticmethod
    def dynamic_shapes() -> tuple[dict[int, torch.export.Dim], dict[int, torch.export.Dim]]:
        """``torch.export``'s ``dynamic_shapes``: batch and source length dynamic."""
        batch, steps = torch.export.Dim("batch"), torch.export.Dim("source_length")
        return {0: batch, 1: steps}, {0: batch}
