"""A child-sum Tree-LSTM over a small batch of trees with structnets' one loop.

Trees are edges from child to parent (torch_geometric's edge_index convention: row 0
senders, row 1 receivers); a forest is just their disjoint union. `propagate` computes the
topological levels once, caches them with the edge index, and runs one batched cell step
per level, leaves first.

    python examples/tree_lstm.py
"""

import torch

import structnets as sn
from structnets.core.chains import forest_edges


def main() -> None:
    torch.manual_seed(0)
    # ((a b) c) and (d (e f)), written as each node's parent (None for a root).
    first = [3, 3, 4, 4, None]  # leaves 0, 1, 2; node 3 = (0 1); root 4 = (3 2)
    second = [4, 3, 3, 4, None]  # leaves 0, 1, 2; node 3 = (1 2); root 4 = (0 3)
    forest = first + [None if p is None else p + len(first) for p in second]
    edge_index = forest_edges(forest)
    x = torch.randn(len(forest), 8)
    cell = sn.ChildSumTreeLSTMCell(8, 16)
    h, c = sn.propagate(cell, x, edge_index, sn.Topological())
    levels = sn.topological_levels(edge_index, len(forest))
    print(f"{len(forest)} nodes in {levels.num_levels} levels of sizes {levels.sizes}")
    roots = [v for v, p in enumerate(forest) if p is None]
    print("root states:", h[roots].shape)
    # The same cell, top-down: reverse the schedule to send the roots' context to the leaves.
    down, _ = sn.propagate(cell, x, edge_index, sn.Topological(reverse=True))
    print("top-down states:", down.shape)


if __name__ == "__main__":
    main()
