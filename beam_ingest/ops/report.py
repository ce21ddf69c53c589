"""Per-layer summary of a run, from its Beam metrics."""
from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter

from ..layout import ROOT_COUNTER_BUCKETS
from ..metrics import NAMESPACE


def ingest_counters(result) -> dict[str, int] | None:
    """The run's counters; None if the runner collects no metrics (Beam's DaskRunner raises
    NotImplementedError from `metrics()`)."""
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except NotImplementedError:
        return None
    out: dict[str, int] = {}
    for c in counters:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out


def format_summary(counters: dict[str, int], layer_count: int, seconds: float) -> str:
    if counters.get("no_metrics"):
        return _mark_summary(counters.get("mark") or {}, layer_count, seconds)
    lines = [f"{'layer':>5}  {'chunks':>8}  {'nodes':>10}  {'skipped':>8}  {'dangling':>8}  {'build s':>8}  "
             f"{'rows':>10}"]
    for layer in range(2, layer_count + 1):
        if f"layer{layer}_chunks" not in counters:
            continue  # not built in this run (--test)
        lines.append(
            f"{layer:>5}  {counters.get(f'layer{layer}_chunks', 0):>8}  "
            f"{counters.get(f'layer{layer}_nodes', 0):>10}  "
            f"{counters.get(f'layer{layer}_skipped_singletons', 0):>8}  "
            f"{counters.get(f'layer{layer}_dangling_cross_edges', 0):>8}  "
            f"{counters.get(f'layer{layer}_us', 0) / 1e6:>8.2f}  "
            f"{counters.get(f'rows_written_Layer{layer}', 0):>10}")
    if "roots_us" in counters:
        lines.append(f"{'roots':>5}  {ROOT_COUNTER_BUCKETS:>8}  {counters.get('roots', 0):>10}  {'':>8}  {'':>8}  "
                     f"{counters.get('roots_us', 0) / 1e6:>8.2f}  {counters.get('rows_written_Roots', 0):>10}")
    svs, built = counters.get("proven_svs", counters.get("layer2_svs", 0)), counters.get("layer2_svs", 0)
    carried = svs != built  # a restart: chunks built by the earlier run are not read again
    lines.append(
        f"SVs {svs}" + (f" ({built} in the chunks built by this run, the rest carried from the checkpoint)"
                        if carried else "")
        + f", edges {counters.get('layer2_edges', 0)} (active {counters.get('layer2_active_edges', 0)})"
        + (" in those chunks" if carried else "") + f", roots {counters.get('roots', 0)}, "
        f"rows {counters.get('rows_written', 0)} ({counters.get('bytes_written', 0)} bytes, "
        f"sink {counters.get('write_us', 0) / 1e6:.1f} s, of which waiting for Bigtable "
        f"{counters.get('write_wait_us', 0) / 1e6:.1f} s) in {seconds:.1f} s")
    throttled_s, retries = counters.get("write_throttled_us", 0) / 1e6, counters.get("write_retries", 0)
    if throttled_s or retries:
        lines.append(f"Bigtable: writes throttled (RESOURCE_EXHAUSTED) for {throttled_s:.1f} s in all (backing off, "
                     f"summed over the writers' threads); {retries} request(s) retried after a transient failure")
    lifted = sum(v for k, v in counters.items() if k.endswith("_lifted_edges"))
    if lifted:
        dangling = sum(v for k, v in counters.items() if k.endswith("_dangling_cross_edges"))
        lines.append(f"table version 3: {lifted} lifted cross-edge rows (family 4); {dangling} one-sided cross-edge "
                     "copies got none (they join nothing)")
    if "l2cache_rows" in counters:
        nodes = counters.get("layer2_nodes")
        of = f" (of {nodes} layer-2 nodes)" if nodes is not None else ""
        lines.append(f"L2 cache: {counters['l2cache_rows']} layer-2 node rows{of}, computed in "
                     f"{counters.get('l2cache_us', 0) / 1e6:.2f} s")
        without, unknown = counters.get("l2cache_nodes_without_voxels", 0), counters.get("l2cache_unknown_svs", 0)
        if without or unknown:
            lines.append(f"warning: WATERSHED disagrees with the graph (accepted by --l2cache_accept_mismatch): "
                         f"{without} layer-2 nodes have no voxel and no cache row, {unknown} supervoxels in "
                         "WATERSHED are not in the graph")
    if counters.get("layer2_far_edges"):
        lines.append(f"warning: {counters['layer2_far_edges']} edges join chunks that are not neighbours (distance > 1 "
                     "on an axis; kept as given, as PyChunkedGraph does)")
    return "\n".join(lines)


def _mark_summary(mark: dict, layer_count: int, seconds: float) -> str:
    """What a runner without metrics allows: the totals of the completion proof."""
    layers = mark.get("layers", {})
    lines = [f"{'layer':>5}  {'chunks':>8}"]
    lines += [f"{layer:>5}  {layers[str(layer)]:>8}" for layer in range(2, layer_count + 1) if str(layer) in layers]
    if "roots" in layers:
        lines.append(f"{'roots':>5}  {layers['roots']:>8}")
    lines.append(f"{mark.get('svs', 0)} SVs, {mark.get('roots', 0)} roots, {mark.get('rows', 0)} rows in {seconds:.1f} s "
                 "(from the completion proof: this runner reports no metrics, so no node counts or timings)")
    return "\n".join(lines)

