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


# ---------------------------------------------------------------- PyG conventions, from_smiles, export


def test_pyg_containers_and_argument_order():
    from torch_geometric.loader import DataLoader

    model = MPNN(MPNNConfig(atom_features=5, bond_features=3, num_targets=2, sum_readout=True)).double()
    graphs = [_random_graph(n) for n in (3, 5, 8)]
    batch = next(iter(DataLoader(graphs, batch_size=3)))
    expected = model(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
    assert expected.shape == (3, 2)
    assert_close(model(batch), expected, **EXACT)
    assert_close(model.forward_batch(batch), expected, **EXACT)
    assert_close(model(batch.x, batch.edge_index, batch.edge_attr, batch.batch), expected, **EXACT)  # counted
    # One Data, or no batch vector: one molecule.
    one = graphs[1]
    alone = model(one.x, one.edge_index, one.edge_attr)
    assert alone.shape == (1, 2)
    assert_close(model(one), alone, **EXACT)
    assert_close(alone, expected[1:2], **EXACT)
    # A trailing molecule without atoms needs its count given.
    padded = model(batch.x, batch.edge_index, batch.edge_attr, batch.batch, 4)
    assert padded.shape == (4, 2)
    assert_close(padded[:3], expected, **EXACT)
    with pytest.raises(ValueError, match="call model\\(data\\)"):
        model(batch, batch.edge_index)
    with pytest.raises(ValueError, match="needs edge_attr"):
        model(one.x, one.edge_index)


def test_from_smiles_integer_features_are_embedded_or_refused():
    pytest.importorskip("rdkit")
    from torch_geometric.loader import DataLoader
    from torch_geometric.utils import from_smiles

    molecules = [from_smiles(s) for s in ("CCO", "c1ccccc1O", "CC(=O)N", "[Na+].[Cl-]", "C")]
    config = MPNNConfig.for_from_smiles(num_targets=2, hidden_size=8, edge_hidden_size=8)
    assert config.atom_features == 9 and config.categorical_atom_features[0] == 119
    model = MPNN(config).double()
    batch = next(iter(DataLoader(molecules, batch_size=5)))
    out = model(batch)
    assert out.shape == (5, 2) and torch.isfinite(out).all()
    # The same as a model on the columns' one-hot codes, with the same weights.
    sizes = config.categorical_atom_features
    x = torch.cat([torch.nn.functional.one_hot(batch.x[:, k], n) for k, n in enumerate(sizes)], 1).double()
    bond_sizes = config.categorical_bond_features
    e = torch.cat([torch.nn.functional.one_hot(batch.edge_attr[:, k], n) for k, n in enumerate(bond_sizes)], 1)
    plain = MPNN(
        MPNNConfig(
            atom_features=sum(sizes), bond_features=sum(bond_sizes), num_targets=2, hidden_size=8, edge_hidden_size=8
        )
    ).double()
    plain.load_state_dict(model.state_dict())
    assert_close(plain(x, batch.edge_index, e.double(), batch.batch), out, **EXACT)
    with pytest.raises(TypeError, match="integer atom features.*from_smiles.*for_from_smiles"):
        MPNN(MPNNConfig(atom_features=9, bond_features=3))(batch)
    wrong = batch.clone()
    wrong.x[2, 1] = 9  # chirality has 9 categories, 0 .. 8
    with pytest.raises(ValueError, match="atom 2 has category 9 in column 1, which has 9 categories"):
        model(wrong)
    with pytest.raises(ValueError, match="names 2 columns' sizes, but atom_features is 9"):
        MPNNConfig(atom_features=9, bond_features=3, categorical_atom_features=(3, 4))


def _onnx_outputs(module, args, dynamic_shapes, feeds, path):
    ort = pytest.importorskip("onnxruntime")
    program = torch.onnx.export(module, args, dynamic_shapes=dynamic_shapes, dynamo=True, verbose=False)
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: value.numpy() for name, value in zip(names, feeds)})[0]


@pytest.mark.parametrize("categorical", [False, True])
def test_export_and_onnx_take_any_number_of_atoms_bonds_and_molecules(categorical, tmp_path):
    torch.manual_seed(0)
    if categorical:
        config = MPNNConfig(
            atom_features=2, bond_features=1, hidden_size=8, edge_hidden_size=8, num_targets=2,
            categorical_atom_features=(5, 3), categorical_bond_features=(4,),
        )  # fmt: skip

        def molecules(sizes):
            graphs = [_random_graph(n) for n in sizes]
            for g in graphs:
                g.x = torch.stack([torch.randint(0, 5, (g.num_nodes,)), torch.randint(0, 3, (g.num_nodes,))], 1)
                g.edge_attr = torch.randint(0, 4, (g.edge_index.shape[1], 1))
            return Batch.from_data_list(graphs)
    else:
        config = MPNNConfig(
            atom_features=5, bond_features=3, hidden_size=8, edge_hidden_size=8, num_targets=2,
            sum_readout=True, distance_bins=4,
        )  # fmt: skip

        def molecules(sizes):
            batch = Batch.from_data_list([_random_graph(n) for n in sizes])
            batch.x, batch.edge_attr = batch.x.float(), batch.edge_attr.float().abs()
            return batch

    model = MPNN(config).eval()
    example, other = molecules((4, 6, 3)), molecules((7, 2, 5, 9, 3))
    args = (example.x, example.edge_index, example.edge_attr, example.batch)
    atoms, bonds = torch.export.Dim("atoms"), torch.export.Dim("bonds")
    shapes = ({0: atoms}, {1: bonds}, {0: bonds}, {0: atoms})
    program = torch.export.export(model, args, dynamic_shapes=shapes)
    expected = model(other)
    feeds = (other.x, other.edge_index, other.edge_attr, other.batch)
    assert expected.shape == (5, 2)
    assert_close(program.module()(*feeds), expected, atol=1e-5, rtol=1e-5)
    onnx = _onnx_outputs(model, args, shapes, feeds, tmp_path / "mpnn.onnx")
    assert_close(torch.from_numpy(onnx), expected.detach(), atol=1e-5, rtol=1e-5)
