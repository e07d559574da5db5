"""Tests for the memory-augmented networks (structnets.models.memory_network)."""

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from structnets.models.memory_network import (
    Addressing,
    MemoryConfig,
    MemoryNetwork,
    allocation_weighting,
    content_weighting,
    directional_weightings,
    erase_and_add,
    sharpen,
    shift_weighting,
    update_link,
    update_precedence,
    update_usage,
)
from structnets.train.checkpoint import load_model, save_checkpoint

DOUBLE = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def test_content_weighting_is_a_softmax_of_scaled_cosine_similarities():
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 5, 3, generator=generator, dtype=DOUBLE)
    memory[0, 2] = 0  # a zero row has similarity 0, not NaN
    keys = torch.randn(2, 4, 3, generator=generator, dtype=DOUBLE)
    strengths = torch.rand(2, 4, generator=generator, dtype=DOUBLE) * 5 + 1
    expected = torch.empty(2, 4, 5, dtype=DOUBLE)
    for b, h in itertools.product(range(2), range(4)):
        scores = []
        for i in range(5):
            norm = memory[b, i].norm() * keys[b, h].norm()
            cosine = float(memory[b, i] @ keys[b, h] / norm) if norm > 0 else 0.0
            scores.append(float(strengths[b, h]) * cosine)
        exps = [math.exp(s) for s in scores]
        expected[b, h] = torch.tensor([e / sum(exps) for e in exps], dtype=DOUBLE)
    torch.testing.assert_close(content_weighting(memory, keys, strengths), expected)


def test_erase_and_add_matches_a_hand_computation():
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    weights = torch.tensor([[1.0, 0.5, 0.0]])
    erase = torch.tensor([[1.0, 0.5]])
    add = torch.tensor([[10.0, 20.0]])
    # row 0: fully erased where e=1, half where e=0.5, then + 1 * a
    # row 1: M * (1 - 0.5 e) + 0.5 a; row 2: untouched
    expected = torch.tensor(
        [
            [
                [1 * 0 + 10, 2 * 0.5 + 20],
                [3 * 0.5 + 5, 4 * 0.75 + 10],
                [5.0, 6.0],
            ]
        ]
    )
    torch.testing.assert_close(erase_and_add(memory, weights, erase, add), expected)


def _brute_force_allocation(usage: list[float]) -> list[float]:
    """DNC's allocation with the sort spelled out: a location's free share times the
    product of the usages of every location that is less used (ties: lower address first)."""
    out = []
    for j, u_j in enumerate(usage):
        before = [u for i, u in enumerate(usage) if u < u_j or (u == u_j and i < j)]
        out.append((1 - u_j) * math.prod(before))
    return out


def test_allocation_weighting_matches_brute_force():
    generator = torch.Generator().manual_seed(1)
    usage = torch.rand(6, 7, generator=generator, dtype=DOUBLE)
    usage[0, :3] = 0.25  # ties
    usage[1] = 1.0  # a full memory allocates nothing
    allocation = allocation_weighting(usage)
    for row in range(usage.shape[0]):
        expected = torch.tensor(_brute_force_allocation(usage[row].tolist()), dtype=DOUBLE)
        torch.testing.assert_close(allocation[row], expected)
    torch.testing.assert_close(allocation.sum(-1), 1 - usage.prod(-1))


def test_fresh_memory_allocates_location_zero_then_one():
    usage = torch.zeros(1, 4)
    torch.testing.assert_close(allocation_weighting(usage), torch.tensor([[1.0, 0, 0, 0]]))
    usage = update_usage(usage, torch.tensor([[1.0, 0, 0, 0]]), torch.zeros(1, 1, 4), torch.zeros(1, 1))
    torch.testing.assert_close(allocation_weighting(usage), torch.tensor([[0.0, 1, 0, 0]]))


def test_usage_update_matches_the_dnc_equation():
    generator = torch.Generator().manual_seed(2)
    usage = torch.rand(3, 5, generator=generator, dtype=DOUBLE)
    write = torch.softmax(torch.randn(3, 5, generator=generator, dtype=DOUBLE), -1)
    reads = torch.softmax(torch.randn(3, 2, 5, generator=generator, dtype=DOUBLE), -1)
    free = torch.rand(3, 2, generator=generator, dtype=DOUBLE)
    result = update_usage(usage, write, reads, free)
    for b, i in itertools.product(range(3), range(5)):
        retention = (1 - free[b, 0] * reads[b, 0, i]) * (1 - free[b, 1] * reads[b, 1, i])
        expected = (usage[b, i] + write[b, i] - usage[b, i] * write[b, i]) * retention
        torch.testing.assert_close(result[b, i], expected)
    # Freeing everything that was just read at full strength empties those locations.
    one_hot = F.one_hot(torch.tensor([[3]]), 5).to(DOUBLE)
    assert (
        float(
            update_usage(
                torch.ones(1, 5, dtype=DOUBLE), torch.zeros(1, 5, dtype=DOUBLE), one_hot, torch.ones(1, 1, dtype=DOUBLE)
            )[0, 3]
        )
        == 0.0
    )


def test_link_matrix_records_the_order_of_writes():
    n = 4
    link, precedence = torch.zeros(1, n, n), torch.zeros(1, n)
    for location in (2, 0, 3):  # write one-hot to 2, then 0, then 3
        write = F.one_hot(torch.tensor([location]), n).float()
        link = update_link(link, precedence, write)
        precedence = update_precedence(precedence, write)
    expected = torch.zeros(n, n)
    expected[0, 2] = 1  # 0 was written right after 2
    expected[3, 0] = 1  # 3 right after 0
    torch.testing.assert_close(link[0], expected)
    torch.testing.assert_close(precedence[0], F.one_hot(torch.tensor(3), n).float())
    # Reading location 0: forward goes to 3 (written next), backward to 2 (written before).
    forward, backward = directional_weightings(link, F.one_hot(torch.tensor([[0]]), n).float())
    torch.testing.assert_close(forward[0, 0], F.one_hot(torch.tensor(3), n).float())
    torch.testing.assert_close(backward[0, 0], F.one_hot(torch.tensor(2), n).float())


def test_link_matrix_properties_under_soft_writes():
    generator = torch.Generator().manual_seed(3)
    n = 6
    link, precedence = torch.zeros(2, n, n, dtype=DOUBLE), torch.zeros(2, n, dtype=DOUBLE)
    for _ in range(12):
        gate = torch.rand(2, 1, generator=generator, dtype=DOUBLE)
        write = gate * torch.softmax(3 * torch.randn(2, n, generator=generator, dtype=DOUBLE), -1)
        link = update_link(link, precedence, write)
        precedence = update_precedence(precedence, write)
        assert float(link.min()) >= 0 and float(link.max()) <= 1
        assert float(link.diagonal(dim1=1, dim2=2).abs().max()) == 0
        # Rows and columns each sum to at most one (DNC paper, Methods).
        assert float(link.sum(-1).max()) <= 1 + 1e-12 and float(link.sum(-2).max()) <= 1 + 1e-12
        assert float(precedence.sum(-1).max()) <= 1 + 1e-12


def test_shift_and_sharpen_match_their_equations():
    generator = torch.Generator().manual_seed(4)
    weights = torch.softmax(torch.randn(2, 1, 5, generator=generator, dtype=DOUBLE), -1)
    shift = torch.softmax(torch.randn(2, 1, 3, generator=generator, dtype=DOUBLE), -1)  # offsets -1, 0, 1
    shifted = shift_weighting(weights, shift)
    for b, i in itertools.product(range(2), range(5)):
        expected = sum(shift[b, 0, k + 1] * weights[b, 0, (i - k) % 5] for k in (-1, 0, 1))
        torch.testing.assert_close(shifted[b, 0, i], expected)
    one_step = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=DOUBLE)  # all mass on offset +1
    torch.testing.assert_close(
        shift_weighting(torch.eye(5, dtype=DOUBLE)[None, :1], one_step)[0, 0], torch.eye(5, dtype=DOUBLE)[1]
    )
    gamma = torch.tensor([[3.0]], dtype=DOUBLE)
    sharpened = sharpen(weights[:1], gamma)
    expected = weights[:1] ** 3 / (weights[:1] ** 3).sum(-1, keepdim=True)
    torch.testing.assert_close(sharpened, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("addressing", list(Addressing))
def test_network_gradients_are_finite_from_a_zero_memory(addressing):
    config = MemoryConfig(
        input_size=5, output_size=4, hidden_size=16, memory_size=6, word_size=4, num_reads=2, addressing=addressing
    )
    model = MemoryNetwork(config)
    inputs = torch.rand(3, 7, 5)
    result = model(inputs)
    assert result.outputs.shape == (3, 7, 4)
    assert result.read_weights.shape == (3, 7, 2, 6) and result.write_weights.shape == (3, 7, 6)
    # Weightings are distributions (reads) or at most one (the DNC's gated write).
    assert float(result.read_weights.detach().sum(-1).max()) <= 1 + 1e-5
    assert float(result.write_weights.detach().sum(-1).max()) <= 1 + 1e-5
    result.outputs.square().sum().backward()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("addressing", list(Addressing))
def test_a_sequence_alone_gives_the_same_outputs_as_in_a_batch(addressing):
    config = MemoryConfig(input_size=3, output_size=2, hidden_size=8, memory_size=5, word_size=3, addressing=addressing)
    model = MemoryNetwork(config).double()
    inputs = torch.rand(4, 6, 3, dtype=DOUBLE)
    torch.testing.assert_close(model(inputs[2:3]).outputs, model(inputs).outputs[2:3])


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="memory_size must be a positive integer, got 0"):
        MemoryConfig(input_size=3, output_size=2, memory_size=0)
    with pytest.raises(ValueError, match="shift_range"):
        MemoryConfig(input_size=3, output_size=2, memory_size=2, addressing=Addressing.NTM, shift_range=1)
    model = MemoryNetwork(MemoryConfig(input_size=3, output_size=2, memory_size=4))
    with pytest.raises(ValueError, match=r"expected inputs of shape \[batch, time, 3\]"):
        model(torch.zeros(1, 5, 4))


@pytest.mark.parametrize("addressing", list(Addressing))
def test_a_checkpoint_rebuilds_the_network_from_its_config(tmp_path, addressing):
    config = MemoryConfig(input_size=3, output_size=2, hidden_size=8, memory_size=5, word_size=3, addressing=addressing)
    model = MemoryNetwork(config).eval()
    save_checkpoint(tmp_path / "model.pt", model, task="test")
    restored, checkpoint = load_model(tmp_path / "model.pt", task="test")
    assert restored.config == config and checkpoint.model_config["addressing"] == addressing.value
    inputs = torch.rand(2, 4, 3)
    torch.testing.assert_close(restored(inputs).outputs, model(inputs).outputs)
