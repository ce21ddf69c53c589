"""Open a table with kvdbclient, PyChunkedGraph 3.x's Bigtable client, and walk one
supervoxel up to its root the way the server reads rows (whole rows, every column through
PyChunkedGraph's attribute registry).

    python examples/open_in_pcg.py GRAPH_ID SV_ID [PROJECT INSTANCE]

PROJECT and INSTANCE default to "emulator" (what the ingest uses with BIGTABLE_EMULATOR_HOST).
"""
import sys
import warnings

import numpy as np
from kvdbclient import BigTableClient, BigTableConfig, attributes

# google-cloud-bigtable warns on every client made for an emulator; this script knows
warnings.filterwarnings("ignore", message="Connecting to Bigtable emulator", category=RuntimeWarning)

graph_id, sv = sys.argv[1], np.uint64(sys.argv[2])
project, instance = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("emulator", "emulator")
client = BigTableClient(graph_id, config=BigTableConfig(PROJECT=project, INSTANCE=instance))
meta = client.read_table_meta()  # the whole meta row, as PyChunkedGraph reads it when it opens a graph
# Inside PyChunkedGraph this is pychunkedgraph.graph.meta.ChunkedGraphMeta; without it installed,
# kvdbclient unpickles it into a placeholder class.
print(f"opened {graph_id}: meta {type(meta).__name__}, table version {client.read_table_version()}")
node = sv
while True:
    row = client.read_node(node)  # no column filter: a column the registry does not know would raise
    children = row.get(attributes.Hierarchy.Child)
    parent = row.get(attributes.Hierarchy.Parent)
    print(f"  {node}" + (f": {len(children[0].value)} children" if children else " (supervoxel)")
          + ("" if parent else " (root)"))
    if not parent:
        break
    node = parent[0].value
client.close()
