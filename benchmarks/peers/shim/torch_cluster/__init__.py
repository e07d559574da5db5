"""Stand-in for torch_cluster, used only when running peers (benchmarks/peers/README.md).

torch_cluster is a compiled extension that is not installed here; structnets provides its
four neighbour searches with the same signatures (structnets.graphs.neighbors). This
package re-exports them so that peer code that imports torch_cluster (or a
torch_geometric older than 2.7, which calls torch_cluster for radius_graph) runs on
structnets' neighbour search. It is put on PYTHONPATH only for the peer's processes.
Not part of the structnets package.
"""

from structnets import knn, knn_graph, radius, radius_graph

__all__ = ["knn", "knn_graph", "radius", "radius_graph"]
__version__ = "0.0.0+structnets-shim"
