"""Speed of the attentional encoder-decoder: decoder steps per second, and the encoder's paths.

At batch 64, hidden 256 (a bidirectional 2-layer LSTM encoder of 128 units per direction, a
2-layer LSTM decoder, Luong's general score, input feeding), embedding 64, source lengths
drawn from [15, 30] (one of them 30) and target length 30, median of interleaved repeats:

1. the whole model, teacher forced, forward + backward: structnets' ``Seq2Seq`` (attention
   as a softmax aggregation along the padded batch's edges) beside a peer written with
   torch.nn alone and the same weights (``torch.nn.LSTM`` over a packed source,
   ``torch.nn.LSTMCell`` decoder, padded attention by ``bmm`` with a ``-inf`` mask); the peer's
   logits are checked against ours first. Also ``Seq2Seq`` with its encoder on the level loop;
2. inference: greedy decoding of 30 tokens (eos suppressed, so that every row runs all 30
   steps) and a beam of width 5, under ``torch.inference_mode``;
3. the encoder alone, forward + backward: ``sn.RNN`` on torch's fused kernel, ``sn.RNN(fused=False)``
   (the generic level loop of trees and DAGs) and ``torch.nn.LSTM`` on the packed batch (the peer).

    python benchmarks/seq2seq_speed.py [--device cpu|cuda] [--threads N] [--repeats 7]

Prints a table and writes ``benchmarks/results/seq2seq_speed.json`` with the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from core_speed import _cpu_name, time_interleaved  # noqa: E402  (benchmarks run as scripts from this folder)
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import structnets as sn
from structnets.models import AttentionScore, Seq2Seq, Seq2SeqConfig, decoder_inputs, sequence_loss


class DensePeer(nn.Module):
    """The same model in torch.nn alone, attention on the padded batch: Luong et al.'s usual code."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        config = model.config
        self.config = config
        self.source_embedding = model.source_embedding
        self.target_embedding = model.target_embedding
        self.encoder = model.encoder.to_torch()
        self.decoder = nn.ModuleList()
        for cell in model.decoder:
            peer = nn.LSTMCell(cell.input_size, cell.hidden_size).to(cell.weight_ih)
            peer.load_state_dict(cell.state_dict())
            self.decoder.append(peer)
        self.key_projection = model.attention.key_projection
        self.combine, self.generator = model.combine, model.generator

    def forward(self, source: torch.Tensor, source_lengths: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(
            self.source_embedding(source), source_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        output, (h_n, c_n) = self.encoder(packed)
        states, _ = pad_packed_sequence(output, batch_first=True, total_length=source.shape[1])
        layers, batch = self.config.num_layers, source.shape[0]

        def joined(part: torch.Tensor) -> torch.Tensor:
            return part.view(layers, 2, batch, -1).transpose(1, 2).reshape(layers, batch, -1)

        h, c = list(joined(h_n).unbind(0)), list(joined(c_n).unbind(0))
        keys = self.key_projection(states)  # [B, S, H]
        padding = torch.arange(source.shape[1], device=source.device).unsqueeze(0) >= source_lengths.unsqueeze(1)
        feed = states.new_zeros(batch, self.config.hidden_size)
        embedded, outputs = self.target_embedding(target_in), []
        for t in range(target_in.shape[1]):
            layer_input = torch.cat([embedded[:, t], feed], -1)
            for layer, cell in enumerate(self.decoder):
                h[layer], c[layer] = cell(layer_input, (h[layer], c[layer]))
                layer_input = h[layer]
            scores = torch.bmm(keys, layer_input.unsqueeze(-1)).squeeze(-1).masked_fill(padding, -torch.inf)
            context = torch.bmm(scores.softmax(-1).unsqueeze(1), states).squeeze(1)
            feed = torch.tanh(self.combine(torch.cat([context, layer_input], -1)))
            outputs.append(feed)
        return self.generator(torch.stack(outputs, 1))


def _training_step(model: nn.Module, source, source_lengths, target_out) -> Callable[[], None]:
    target_in = decoder_inputs(target_out, model.config.bos)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        sequence_loss(model(source, source_lengths, target_in), target_out, model.config.pad).backward()

    return run


def _inference(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            fn()

    return run


def _encoder_step(rnn: nn.Module, embedded: torch.Tensor, lengths: torch.Tensor, packed: bool) -> Callable[[], None]:
    def run() -> None:
        rnn.zero_grad(set_to_none=True)
        if packed:  # torch.nn.LSTM's way to variable lengths
            inputs = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
            output, _ = pad_packed_sequence(rnn(inputs)[0], batch_first=True, total_length=embedded.shape[1])
        else:
            output, _ = rnn(embedded, lengths=lengths)
        output.sum().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--source-length", type=int, default=30)
    parser.add_argument("--target-length", type=int, default=30)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--width", type=int, default=5, help="beam width")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "seq2seq_speed.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    config = Seq2SeqConfig(args.vocab, args.vocab, hidden_size=args.hidden, attention=AttentionScore.GENERAL)
    model = Seq2Seq(config).to(device)
    batch, steps, target_length = args.batch, args.source_length, args.target_length
    source_lengths = torch.randint(steps // 2, steps + 1, (batch,))
    source_lengths[0] = steps
    source = torch.randint(3, args.vocab, (batch, steps))
    source[torch.arange(steps).unsqueeze(0) >= source_lengths.unsqueeze(1)] = config.pad
    target_out = torch.randint(3, args.vocab, (batch, target_length))
    source, target_out = source.to(device), target_out.to(device)
    source_lengths = source_lengths.to(device)

    peer = DensePeer(model)
    with torch.no_grad():
        target_in = decoder_inputs(target_out, config.bos)
        torch.testing.assert_close(
            peer(source, source_lengths, target_in), model(source, source_lengths, target_in), atol=1e-4, rtol=1e-4
        )
    level_loop = Seq2Seq(config).to(device)
    level_loop.load_state_dict(model.state_dict())
    level_loop.encoder.fused = False
    no_eos = Seq2Seq(config).to(device)
    no_eos.load_state_dict(model.state_dict())
    with torch.no_grad():
        no_eos.generator.bias[config.eos] = -1e4  # every row decodes all target_length steps

    whole = time_interleaved(
        {
            "torch.nn peer (nn.LSTM encoder, nn.LSTMCell decoder, bmm attention)": _training_step(
                peer, source, source_lengths, target_out
            ),
            "structnets Seq2Seq (graph attention)": _training_step(model, source, source_lengths, target_out),
            "structnets Seq2Seq, encoder on the level loop": _training_step(
                level_loop, source, source_lengths, target_out
            ),
        },
        device,
        args.repeats,
    )
    inference = time_interleaved(
        {
            "greedy": _inference(lambda: no_eos.greedy(source, source_lengths, target_length)),
            f"beam search, width {args.width}": _inference(
                lambda: no_eos.beam_search(source, source_lengths, target_length, width=args.width)
            ),
        },
        device,
        args.repeats,
    )
    embedded = model.source_embedding(source).detach()
    fused_encoder = model.encoder
    loop_encoder = sn.RNN.from_torch(fused_encoder.to_torch(), fused=False)
    torch_encoder = fused_encoder.to_torch()
    lengths_cpu = source_lengths.cpu()
    encoder = time_interleaved(
        {
            "torch.nn.LSTM (packed)": _encoder_step(torch_encoder, embedded, lengths_cpu, packed=True),
            "sn.RNN (fused kernel)": _encoder_step(fused_encoder, embedded, source_lengths, packed=False),
            "sn.RNN (fused=False, level loop)": _encoder_step(loop_encoder, embedded, source_lengths, packed=False),
        },
        device,
        args.repeats,
    )

    sizes = dict(
        batch=batch,
        hidden=args.hidden,
        embedding=config.embedding_size,
        layers=config.num_layers,
        source_length=steps,
        source_lengths="uniform in [S/2, S]",
        target_length=target_length,
        vocab=args.vocab,
        cell="lstm",
        attention=config.attention.value,
        beam_width=args.width,
    )
    record = {"machine": machine, "sizes": sizes, "teacher_forcing_ms": whole, "inference_ms": inference}
    record["decoder_steps_per_second"] = {
        **{f"teacher forcing, {name}": target_length / (ms / 1e3) for name, ms in whole.items()},
        **{name: target_length / (ms / 1e3) for name, ms in inference.items()},
    }
    record["encoder_ms"] = encoder
    peer_ms, encoder_peer = next(iter(whole.values())), encoder["torch.nn.LSTM (packed)"]
    print(
        f"Seq2Seq speed, {sizes}, on {machine['device']} ({machine['cpu_threads']} threads, torch {torch.__version__})"
    )
    print(f"{'forward + backward, teacher forced':72s} {'ms':>8s} {'steps/s':>9s} {'vs peer':>8s}")
    for name, ms in whole.items():
        print(f"  {name:70s} {ms:8.1f} {target_length / ms * 1e3:9.0f} {ms / peer_ms:7.2f}x")
    print(f"{'inference (inference_mode)':72s}")
    for name, ms in inference.items():
        print(f"  {name:70s} {ms:8.1f} {target_length / ms * 1e3:9.0f}")
    print(f"{'encoder alone, forward + backward':72s}")
    for name, ms in encoder.items():
        print(f"  {name:70s} {ms:8.1f} {'':9s} {ms / encoder_peer:7.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
