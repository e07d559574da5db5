import torch
from torch.testing import assert_close
from torch_geometric.nn.aggr import Set2Set as PyGSet2Set

from structnets.nn import Set2Set

EXACT = dict(atol=1e-10, rtol=0)


def test_set2set_matches_torch_geometric():
    ours = Set2Set(6, steps=3).double()
    theirs = PyGSet2Set(6, processing_steps=3).double()
    theirs.lstm.load_state_dict({f"{k}_l0": v for k, v in ours.cell.state_dict().items()})
    x = torch.randn(10, 6, dtype=torch.double, requires_grad=True)
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    out, expected = ours(x, batch, 3), theirs(x, batch)
    assert_close(out, expected, **EXACT)
    assert_close(*(torch.autograd.grad(y.square().sum(), x)[0] for y in (out, expected)), **EXACT)


def test_set2set_ignores_node_order_and_other_graphs():
    readout = Set2Set(4, steps=2).double()
    x = torch.randn(9, 4, dtype=torch.double)
    batch = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2])
    out = readout(x, batch, 3)
    perm = torch.randperm(9)
    assert_close(readout(x[perm], batch[perm], 3), out, **EXACT)
    alone = torch.cat(
        [readout(x[batch == g], torch.zeros(int((batch == g).sum()), dtype=torch.long), 1) for g in range(3)]
    )
    assert_close(alone, out, **EXACT)


def test_set2set_of_one_node_reads_that_node():
    readout = Set2Set(3, steps=4).double()
    x = torch.randn(1, 3, dtype=torch.double)
    out = readout(x, torch.zeros(1, dtype=torch.long), 1)
    assert_close(out[:, 3:], x, **EXACT)  # attention over one node is one
