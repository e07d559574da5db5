import pytest
import torch
from torch.testing import assert_close
from torch_geometric.data import Batch, Data
from torch_geometric.nn import NNConv

from structnets.models import MPNN, MPNNConfig
from structnets.models import mpnn as mpnn_module

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


@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("discrete", [False, True])
def test_rounds_match_nnconv_and_gru(discrete, rounds):
    """The edge-network message is torch_geometric's NNConv (sum aggregation), transposed.

    Discrete (one-hot) bond features take the per-bond-type path, continuous ones the
    per-edge path; both must give NNConv's result, outputs and gradients.
    """
    config = MPNNConfig(atom_features=5, bond_features=3, hidden_size=4, rounds=rounds)
    model = MPNN(config).double()
    graph = _random_graph(6)
    if discrete:
        graph.edge_attr = torch.nn.functional.one_hot(torch.randint(0, 3, (graph.edge_index.shape[1],)), 3).double()
    conv = NNConv(4, 4, model.edge_network.net, aggr="add", root_weight=False, bias=False).double()
    h0, h = model.node_states(graph.x, graph.edge_index, graph.edge_attr)

    # NNConv multiplies x_j (as a row) by W(e); the MPNN multiplies A(e) by h_w (a column).
    class Transposed(torch.nn.Module):
        def forward(self, e):
            return model.edge_network(e).transpose(1, 2).reshape(len(e), -1)

    conv.nn = Transposed()
    expected = h0
    for _ in range(rounds):
        expected = model.update(conv(expected, graph.edge_index, graph.edge_attr), expected)
    assert_close(h, expected, **EXACT)
    parameters = list(model.edge_network.parameters()) + list(model.update.parameters())
    ours = torch.autograd.grad(h.square().sum(), parameters)
    theirs = torch.autograd.grad(expected.square().sum(), parameters)
    for a, b in zip(ours, theirs):
        assert_close(a, b, **EXACT)


def test_typed_and_per_edge_messages_agree(monkeypatch):
    model = MPNN(MPNNConfig(atom_features=5, bond_features=3, num_targets=2, sum_readout=True)).double()
    graphs = [_random_graph(n) for n in (3, 5, 8)]
    for g in graphs:
        g.edge_attr = torch.nn.functional.one_hot(torch.randint(0, 3, (g.edge_index.shape[1],)), 3).double()
    batch = Batch.from_data_list(graphs)
    results = []
    for limit in (10**9, 0):  # every graph through the per-type path, then through the per-edge one
        monkeypatch.setattr(mpnn_module, "_TYPED_MESSAGE_LIMIT", limit)
        model.zero_grad()
        out = model.forward_batch(batch)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert_close(results[0][0], results[1][0], **EXACT)
    for a, b in zip(results[0][1], results[1][1]):
        assert_close(a, b, **EXACT)


def test_state_dict_keys_are_those_of_trained_checkpoints():
    """Checkpoints of earlier versions load: the parameters keep their names."""
    model = MPNN(MPNNConfig(atom_features=5, bond_features=3))
    modules = {key.rsplit(".", 1)[0] for key in model.state_dict()}
    assert modules == {
        "embed.0",
        "edge_network.net.0",
        "edge_network.net.2",
        "update",
        "readout.cell",
        "head.0",
        "head.3",
    }
    assert len(model.state_dict()) == 18


def test_prediction_is_invariant_to_atom_order():
    model = MPNN(MPNNConfig(atom_features=5, bond_features=3, num_targets=2)).double()
    graph = _random_graph(7)
    perm = torch.randperm(7)
    inverse = torch.argsort(perm)
    permuted = Data(x=graph.x[perm], edge_index=inverse[graph.edge_index], edge_attr=graph.edge_attr)
    one = model.forward_batch(Batch.from_data_list([graph]))
    two = model.forward_batch(Batch.from_data_list([permuted]))
    assert_close(one, two, atol=1e-10, rtol=0)


def test_batch_equals_molecules_alone():
    model = MPNN(MPNNConfig(atom_features=5, bond_features=3, num_targets=2)).double()
    graphs = [_random_graph(n) for n in (1, 4, 9)]  # one atom, no bonds, works too
    batched = model.forward_batch(Batch.from_data_list(graphs))
    alone = torch.cat([model.forward_batch(Batch.from_data_list([g])) for g in graphs])
    assert_close(batched, alone, atol=1e-10, rtol=0)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    graphs = [_random_graph(n) for n in torch.randint(2, 9, (32,)).tolist()]
    for g in graphs:
        g.x, g.edge_attr = g.x.float(), g.edge_attr.float()
        g.y = g.x.sum().view(1, 1) / 10
    batch = Batch.from_data_list(graphs)
    model = MPNN(MPNNConfig(atom_features=5, bond_features=3, hidden_size=16, edge_hidden_size=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model.forward_batch(batch), batch.y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
