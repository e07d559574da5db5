"""Run geoelements/gns's own ``gns/train.py`` unmodified, with structnets' neighbour search.

  python benchmarks/peers/gns_launch.py GNS_SRC/gns/train.py --mode train --data_path ... [their flags]

What this launcher changes, at run time only (their files are untouched):

1. torch_geometric's ``radius_graph``. geoelements/gns's learned_simulator.py does
   ``from torch_geometric.nn import radius_graph``. torch_geometric >= 2.7 implements it
   with pyg-lib (it ignores torch_cluster), older ones with torch_cluster; neither compiled
   extension is installed here. Before their modules are imported, this launcher puts
   benchmarks/peers/shim (a ``torch_cluster`` package re-exporting structnets' searches) on
   sys.path and sets ``torch_geometric.nn.radius_graph`` (and ``torch_geometric.nn.pool.
   radius_graph``) to ``structnets.radius_graph``, which has torch_cluster's signature and
   output rows. Their call is ``radius_graph(x, r, batch, loop=True, max_num_neighbors=128)``.
2. A timer around that function: calls and seconds spent in the neighbour search (and
   the first call's seconds apart: it includes one-off imports) are written as JSON to
   $GNS_PEER_STATS (if set) when the process exits, with the torch thread count.
3. ``--threads N`` (launcher option, before the script path): torch.set_num_threads(N).

Then their script runs as ``__main__`` (runpy), with the remaining arguments as its argv,
so absl parses their flags as usual.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main() -> None:
    # A job started in the background by a non-interactive shell inherits SIGINT ignored, and
    # Python then raises no KeyboardInterrupt: their loop would never see the deadline.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = sys.argv[1:]
    threads = None
    if len(args) >= 2 and args[0] == "--threads":
        threads, args = int(args[1]), args[2:]
    if not args:
        sys.exit("usage: gns_launch.py [--threads N] GNS_SRC/gns/train.py [their flags]")
    script = str(Path(args[0]).resolve())

    sys.path.insert(0, str(HERE / "shim"))
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

    import torch
    import torch_geometric.nn
    import torch_geometric.nn.pool

    import structnets

    if threads is not None:
        torch.set_num_threads(threads)

    # The first call also pays one-off imports (scipy's k-d tree, ...): kept apart.
    stats = {"radius_graph_calls": 0, "radius_graph_seconds": 0.0, "radius_graph_first_call_seconds": None}

    def radius_graph(*a, **k):
        start = time.perf_counter()
        try:
            return structnets.radius_graph(*a, **k)
        finally:
            spent = time.perf_counter() - start
            if stats["radius_graph_first_call_seconds"] is None:
                stats["radius_graph_first_call_seconds"] = spent
            stats["radius_graph_seconds"] += spent
            stats["radius_graph_calls"] += 1

    radius_graph.__doc__ = structnets.radius_graph.__doc__
    torch_geometric.nn.radius_graph = radius_graph
    torch_geometric.nn.pool.radius_graph = radius_graph

    out = os.environ.get("GNS_PEER_STATS")
    if out:

        def dump() -> None:
            stats["torch_threads"] = torch.get_num_threads()
            Path(out).write_text(json.dumps(stats, indent=1))

        atexit.register(dump)

    sys.argv = [script, *args[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
