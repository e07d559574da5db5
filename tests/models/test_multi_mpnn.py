"""MultiMPNN: one MPNN read-out per molecule of a row, joined, one head; and the MPNN's encoder mode."""

import dataclasses

import pytest
import torch
from torch.testing import assert_close
from torch_geometric.data import Batch, Data

from structnets.models import MPNN, MPNNConfig, MultiMPNN, MultiMPNNConfig
from structnets.train.checkpoint import checkpoint_bytes, load_model

EXACT = dict(atol=1e-10, rtol=0)


def _random_graph(num_nodes: int, atom: int = 5, bond: int = 3) -> Data:
    pairs = torch.combinations(torch.arange(num_nodes), 2)
    keep = pairs[torch.rand(len(pairs)) < 0.5]
    edge_index = torch.cat([keep.t(), keep.t().flip(0)], 1) if len(keep) else torch.zeros(2, 0, dtype=torch.long)
    return Data(
        x=torch.randn(num_nodes, atom, dtype=torch.double),
        edge_index=edge_index,
        edge_attr=torch.randn(edge_index.shape[1], bond, dtype=torch.double),
    )


def _batch(sizes, dtype=torch.double) -> Batch:
    graphs = [_random_graph(n) for n in sizes]
    for graph in graphs:
        graph.x, graph.edge_attr = graph.x.to(dtype), graph.edge_attr.to(dtype)
    return Batch.from_data_list(graphs)


ENCODER = MPNNConfig(
    atom_features=5, bond_features=3, hidden_size=4, edge_hidden_size=8, readout_hidden_size=8, rounds=2
)


def _multi(**fields) -> MultiMPNN:
    return MultiMPNN(MultiMPNNConfig(encoder=ENCODER, readout_hidden_size=8, **fields)).double().eval()


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_encoder_alone_returns_its_read_out():
    config = dataclasses.replace(ENCODER, with_head=False, sum_readout=True)
    encoder = MPNN(config).double()
    assert encoder.head is None and not any(name.startswith("head") for name in encoder.state_dict())
    batch = _batch([3, 6, 1])
    out = encoder(batch)
    assert out.shape == (3, config.fingerprint_size) and config.fingerprint_size == 6 * 4
    assert_close(out, encoder.fingerprint(batch), **EXACT)
    # The encoder of a model with a head reads out the same numbers.
    headed = MPNN(dataclasses.replace(config, with_head=True)).double()
    headed.load_state_dict(encoder.state_dict(), strict=False)
    assert_close(headed.fingerprint(batch), out, **EXACT)


def test_extra_features_join_the_read_out_before_the_head():
    model = MPNN(dataclasses.replace(ENCODER, extra_features=2, num_targets=3)).double().eval()
    batch = _batch([3, 4])
    features = torch.randn(2, 2, dtype=torch.double)
    expected = model.head(torch.cat([model.fingerprint(batch), features], -1))
    assert_close(model(batch, features=features), expected, **EXACT)
    batch.features = features  # a Batch may carry them
    assert_close(model(batch), expected, **EXACT)
    assert not torch.allclose(model(batch, features=features + 1), expected)
    with pytest.raises(ValueError, match=r"joins 2 per-row features.*pass features=\[2, 2\], got None"):
        model(_batch([3, 4]))
    with pytest.raises(ValueError, match=r"got \(2, 3\)"):
        model(_batch([3, 4]), features=torch.zeros(2, 3, dtype=torch.double))
    plain = MPNN(ENCODER).double()
    with pytest.raises(ValueError, match="takes no per-row features"):
        plain(_batch([3]), features=torch.zeros(1, 2, dtype=torch.double))


def test_read_outs_are_each_positions_encoder_joined():
    model = _multi(molecules=3, num_targets=2)
    assert len(model.encoders) == 3 and all(e.head is None for e in model.encoders)
    graphs = [_batch([3, 5]), _batch([2, 2]), _batch([6, 1])]
    read = model.fingerprint(graphs)
    assert read.shape == (2, 3 * ENCODER.fingerprint_size) == (2, model.config.fingerprint_size)
    expected = torch.cat([encoder(g) for encoder, g in zip(model.encoders, graphs)], -1)
    assert_close(read, expected, **EXACT)
    assert_close(model(graphs), model.head(expected), **EXACT)


def test_a_shared_encoder_has_one_encoders_parameters():
    shared, apart = _multi(shared_encoder=True), _multi()
    encoder = MPNN(dataclasses.replace(ENCODER, with_head=False))
    assert len(shared.encoders) == 1 and len(apart.encoders) == 2
    assert _count(shared.encoders) == _count(encoder)
    assert _count(apart.encoders) == 2 * _count(encoder)
    assert _count(shared.head) == _count(apart.head)  # the head reads both positions either way


def test_the_same_molecule_twice_reads_out_alike_only_with_a_shared_encoder():
    graph = _batch([5, 3])
    d = ENCODER.fingerprint_size
    shared = _multi(shared_encoder=True).fingerprint([graph, graph])
    assert_close(shared[:, :d], shared[:, d:], **EXACT)
    apart = _multi().fingerprint([graph, graph])
    assert not torch.allclose(apart[:, :d], apart[:, d:])
    # Shared, swapping the molecules swaps the halves of the read-out.
    other = _batch([2, 7])
    model = _multi(shared_encoder=True)
    one, two = model.fingerprint([graph, other]), model.fingerprint([other, graph])
    assert_close(one, torch.cat([two[:, d:], two[:, :d]], -1), **EXACT)


def test_wrong_positions_rows_and_features_are_refused():
    model = _multi(extra_features=2)
    graphs = [_batch([3, 4]), _batch([2, 5])]
    features = torch.randn(2, 2, dtype=torch.double)
    assert model(graphs, features=features).shape == (2, 1)
    with pytest.raises(ValueError, match="takes 2 molecules per example, got 1"):
        model(graphs[:1], features=features)
    with pytest.raises(ValueError, match="takes 2 molecules per example, got 3"):
        model([*graphs, graphs[0]], features=features)
    with pytest.raises(ValueError, match=r"same number of examples, got \[2, 3\]"):
        model([graphs[0], _batch([2, 5, 1])], features=features)
    with pytest.raises(ValueError, match=r"pass features=\[2, 2\], got None"):
        model(graphs)
    with pytest.raises(ValueError, match=r"pass features=\[2, 2\], got \(3, 2\)"):
        model(graphs, features=torch.zeros(3, 2, dtype=torch.double))
    with pytest.raises(ValueError, match="takes no per-row features"):
        _multi()(graphs, features=features)
    with pytest.raises(ValueError, match="at least 2 molecules per example, got 1; use MPNN"):
        MultiMPNNConfig(encoder=ENCODER, molecules=1)


def test_the_encoder_config_head_settings_are_ignored():
    encoder = dataclasses.replace(ENCODER, extra_features=5, num_targets=7)
    config = MultiMPNNConfig(encoder=encoder, readout_hidden_size=8)
    model = MultiMPNN(config).double()
    assert all(e.head is None and e.config.extra_features == 0 for e in model.encoders)
    assert model([_batch([3]), _batch([4])]).shape == (1, 1)


@pytest.mark.parametrize("shared", [False, True])
def test_a_checkpoint_rebuilds_the_model(tmp_path, shared):
    model = MultiMPNN(
        MultiMPNNConfig(
            encoder=dataclasses.replace(ENCODER, sum_readout=True),
            molecules=2,
            num_targets=3,
            shared_encoder=shared,
            extra_features=2,
            readout_hidden_size=8,
            dropout=0.1,
        )
    ).eval()
    (tmp_path / "model.pt").write_bytes(checkpoint_bytes(model, task="pairs", extra={"note": "x"}))
    again, checkpoint = load_model(tmp_path, task="pairs")
    assert isinstance(again, MultiMPNN) and again.config == model.config
    assert checkpoint.model_config["encoder"]["sum_readout"] is True and checkpoint.extra == {"note": "x"}
    assert again.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    graphs = [_batch([3, 4], torch.float32) for _ in range(2)]
    features = torch.randn(2, 2)
    assert_close(again(graphs, features=features), model(graphs, features=features), atol=0, rtol=0)


def test_an_encoder_only_mpnn_checkpoint_round_trips(tmp_path):
    model = MPNN(dataclasses.replace(ENCODER, with_head=False, extra_features=0)).eval()
    (tmp_path / "model.pt").write_bytes(checkpoint_bytes(model, task="fp"))
    again, _ = load_model(tmp_path, task="fp")
    assert again.config == model.config and again.head is None
    graph = _batch([4], torch.float32)
    assert_close(again(graph), model(graph), atol=0, rtol=0)
