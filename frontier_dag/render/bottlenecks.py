"""The bottleneck view of a finished run (``frontier-dag render RUN_DIR --bottlenecks``).

One drawing with two parts:

* the stages of the run: arrivals, the entry rule where requests may enter several pools,
  each queue, each pool (its GPUs, utilization, KV peak), the KV link and the hand-off waits
  of PD, each with its share of the run's critical path
  (the request that finished last) and of the p99-TTFT and p99-TPOT requests' time. Edges
  into a stage that holds part of the critical path are red, thicker with the share;
* the representative iteration of the bottleneck pool (the pool with the largest share of
  the critical path): its iteration of median duration, rebuilt as its DAG
  (``frontier_dag.analysis.rebuild``) with its critical path in red, as ``frontier-dag
  render CONFIG`` draws one.

Transfers are named by the workflow's own ops (``a2f / f2a``, ``kv_cache``).
"""

from __future__ import annotations

from pathlib import Path

import graphviz
import numpy as np

from frontier_dag.analysis.rebuild import rebuild_iteration
from frontier_dag.analysis.run_data import RunData
from frontier_dag.analysis.run_report import RunAnalysis
from frontier_dag.ir.graph import EventGraph
from frontier_dag.render.graphviz import CRITICAL, POOL_COLORS, _fmt_us, iteration_dot, write


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _share(shares: dict[str, dict[str, float]], pool: str, categories: tuple[str, ...] | None = None,
           exclude: tuple[str, ...] = ()) -> float:
    cats = shares.get(pool, {})
    return sum(v for k, v in cats.items() if (categories is None or k in categories) and k not in exclude)


def _top(shares: dict[str, float], exclude: tuple[str, ...], n: int = 3) -> str:
    items = sorted(((k, v) for k, v in shares.items() if k not in exclude and v > 0.0005), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {_pct(v)}" for k, v in items)


def _wait_stats(seconds: np.ndarray) -> str:
    seconds = seconds[np.isfinite(seconds)]
    if not len(seconds):
        return "no requests"
    return f"mean {_fmt_us(seconds.mean() * 1e6)}, p99 {_fmt_us(np.percentile(seconds, 99) * 1e6)}"


WAITS = ("queueing", "backpressure", "memory_waits", "kv_transfer")


def transfer_ops(graph: EventGraph, roles: set[str]) -> str:
    """The names of the workflow's transfer ops on links between the pools of ``roles``."""
    ops = set()
    for _, a in graph.graph.nodes(data=True):
        resource = graph.resources[a["resource"]]
        if resource.kind == "link" and {resource.pool, resource.dst} <= roles:
            ops.add(a["op"])
    return " / ".join(sorted(ops))


def pipeline_line(summary: dict, pool: str, shares: dict[str, float]) -> str:
    """For a pipelined pool: its slowest stage, each stage's bubbles (the share of the run
    it idles while the slowest works) and the waits for busy stages on the critical path."""
    pipe = (summary.get("pipeline") or {}).get(pool)
    if not pipe:
        return ""
    k, busy = pipe["slowest_stage"], pipe["stage_busy"]
    bubbles = ", ".join(f"pp[{i}] {_pct(b)}" for i, b in enumerate(pipe["bubbles"]) if i != k)
    return (f"\npipeline of {len(busy)} stages: slowest pp[{k}] (busy {_pct(busy[k])}); bubbles {bubbles}; "
            f"waits_and_bubbles {_pct(shares.get('waits_and_bubbles', 0.0))} of the critical path")


def bottleneck_pool(analysis: RunAnalysis, path_pools: dict[str, dict[str, float]]) -> tuple[str, float]:
    """The pool (of those that run iterations) with the largest share of the critical path,
    its members' included; by utilisation where the run has no attribution. And the share."""
    run = analysis.run
    shares = {name: sum(_share(path_pools, m, exclude=WAITS) for m in pool.members) for name, pool in run.pools.items()}
    if max(shares.values(), default=0.0) <= 0.0:
        busy = run.summary.get("utilization", {})
        return max(run.pools, key=lambda name: busy.get(name, 0.0)), 0.0
    name = max(shares, key=shares.get)
    return name, shares[name]


def median_iteration(run, pool: str) -> tuple[int, int]:
    """Row of the iteration of median duration of ``pool`` (the lower middle one), and how
    many iterations the pool ran."""
    rows = np.flatnonzero(run.iterations["pool"].astype(str).to_numpy() == pool)
    order = rows[np.argsort(run.iterations["duration_us"].to_numpy()[rows], kind="stable")]
    return int(order[(len(order) - 1) // 2]), len(order)


def stage_graph(analysis: RunAnalysis, graph: EventGraph) -> tuple[graphviz.Digraph, dict]:
    """The stage-level view (a cluster to embed) and the run-path shares it drew; ``graph``
    is the run's traced workflow (for the names of its transfers)."""
    run = analysis.run
    path = analysis.path()
    tail = analysis.tail()
    path_pools = analysis.by_pool(path)
    tail_pools = {k: tail[k]["by_pool"] for k in ("ttft_p99", "tpot_p99") if k in tail}
    summary, rq = run.summary, run.requests
    g = graphviz.Digraph(name="cluster_stages")
    g.attr(label=f"stages of {Path(run.label).name}: shares of the critical path\n(request {path.request}, the last to "
                 f"finish: {_fmt_us(path.length_us)})", style="rounded", color="#999999", fontname="Helvetica")

    def tails(pool: str, cats: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> str:
        parts = [f"{k.split('_')[0].upper()} p99 {_pct(_share(v, pool, cats, exclude))}" for k, v in tail_pools.items()]
        return ", ".join(parts)

    def edge(a: str, b: str, share: float, label: str = "") -> None:
        attrs = {"label": label, "fontsize": "9"}
        if share > 0.0005:
            attrs.update(color=CRITICAL, penwidth=f"{1.2 + 8 * share:.2f}", fontcolor=CRITICAL)
        g.edge(a, b, **attrs)

    wl = run.config.workload
    arrivals = f"{wl.clients} closed-loop clients" if wl.clients else f"{wl.arrival.kind} arrivals"
    if wl.arrival is not None and getattr(wl.arrival, "rate_per_s", None):
        arrivals += f", {wl.arrival.rate_per_s:g}/s"
    g.node("s_arrivals", f"{arrivals}\n{summary.get('num_requests', len(rq)):,} requests", shape="ellipse")
    entered = run.entry_of()
    handed = any(row["op"] == "kv_transfer" for row in path.rows)  # the path's request moved its KV
    queue_of: dict[str, str] = {}  # pool -> the node of its queue
    if len(run.entries) == 1:
        entry = run.entries[0]
        q_share = _share(path_pools, entry, ("queueing", "memory_waits"))
        g.node("s_queue", f"queue of {entry}\nwait {_wait_stats(rq['queue_s'].to_numpy())}\n"
                          f"critical path {_pct(q_share)}\n{tails(entry, ('queueing', 'memory_waits'))}", shape="cylinder")
        edge("s_arrivals", "s_queue", q_share)
        queue_of[entry] = "s_queue"
    else:  # the entry rule sends each request to one of the entry pools' queues
        route = summary.get("entry") or {}
        counts = route.get("requests") or {}
        shares = {p: _share(path_pools, p, ("queueing", "memory_waits")) for p in run.entries}
        g.node("s_route", f"entry rule {route.get('rule', '')}\n"
                          + "\n".join(f"{counts.get(p, int((entered == p).sum())):,} requests enter {p}" for p in run.entries),
               shape="diamond")
        edge("s_arrivals", "s_route", sum(shares.values()))
        for p in run.entries:
            waits = f"wait {_wait_stats(rq['queue_s'].to_numpy()[entered == p])}"
            title = f"queue of {p}"
            if p == run.decode:  # one queue: new requests, and requests whose KV arrived
                title += ": new requests and arrived KV"
                waits = f"new: {waits}\nKV arrived: wait {_wait_stats(rq['decode_wait_s'].to_numpy())}"
            g.node(f"s_queue_{p}", f"{title}\n{waits}\ncritical path {_pct(shares[p])}\n"
                                   f"{tails(p, ('queueing', 'memory_waits'))}", shape="cylinder")
            # the decode pool's queue holds the path's request after a hand-off, or when it entered there
            edge("s_route", f"s_queue_{p}", 0.0 if p == run.decode and handed else shares[p])
            queue_of[p] = f"s_queue_{p}"

    def pool_node(name: str, after: str) -> None:
        pool = run.pools[name]
        share = _share(path_pools, name, exclude=WAITS)
        title = f"pool {name} ({pool.role})" + (f" with {', '.join(pool.members[1:])}" if len(pool.members) > 1 else "")
        label = (f"{title}: {pool.gpus} GPUs, x{pool.replicas}\n"
                 f"busy {_pct(summary.get('utilization', {}).get(name, 0.0))}, "
                 f"KV peak {_pct(summary.get('kv_peak_usage', {}).get(name, 0.0))}\n"
                 f"critical path {_pct(share)}: {_top(path_pools.get(name, {}), WAITS)}\n{tails(name, exclude=WAITS)}"
                 + pipeline_line(summary, name, path_pools.get(name, {})))
        g.node(f"s_pool_{name}", label, shape="box", style="rounded,filled",
               fillcolor=POOL_COLORS.get(pool.role, "#f4f4f4"))
        edge(after, f"s_pool_{name}", share)
        for member in pool.members[1:]:
            # AF: the FFN pool steps with the attention pool in every iteration
            cfg = run.config.cluster.pools[member]
            share_m = _share(path_pools, member, exclude=WAITS)
            link = _share(path_pools, f"{name}->{member}") + _share(path_pools, f"{member}->{name}")
            g.node(f"s_member_{member}", f"pool {member} ({cfg.role}): {cfg.gpus} GPUs, steps with {name}\n"
                                         f"critical path {_pct(share_m)}: {_top(path_pools.get(member, {}), WAITS)}\n"
                                         f"{tails(member, exclude=WAITS)}",
                   shape="box", style="rounded,filled", fillcolor=POOL_COLORS.get(cfg.role, "#f4f4f4"))
            names = transfer_ops(graph, {pool.role, cfg.role}) or "steps with"
            attrs = {"label": f"{names} {_pct(link)}", "fontsize": "9", "dir": "both"}
            if link + share_m > 0.0005:
                attrs.update(color=CRITICAL, penwidth=f"{1.2 + 8 * (link + share_m):.2f}", fontcolor=CRITICAL)
            g.edge(f"s_pool_{name}", f"s_member_{member}", **attrs)

    for name in run.entries:
        pool_node(name, queue_of[name])
    if run.decode:
        dec = run.decode
        bp = _share(path_pools, dec, ("backpressure",))
        g.node("s_backpressure", f"prefilled, waiting for {dec} KV blocks\n{_wait_stats(rq['transfer_wait_s'].to_numpy())}\n"
                                 f"critical path {_pct(bp)}\n{tails(dec, ('backpressure',))}", shape="cylinder")
        edge(f"s_pool_{run.handoff}", "s_backpressure", bp)
        link = run.link or "link"
        kv = _share(path_pools, link, ("kv_transfer",))
        moves = sorted({a["op"] for _, a in graph.graph.nodes(data=True)
                        if graph.stages[a["stage"]].serves == "transfer"})
        what = f"KV transfer ({' / '.join(moves)})" if moves else "KV transfer (streamed with the prefill)"
        g.node("s_link", f"link {link}\n{what}\n{_wait_stats(rq['transfer_s'].to_numpy())}\n"
                         f"critical path {_pct(kv)}\n{tails(link, ('kv_transfer',))}", shape="cds", margin="0.25,0.05")
        edge("s_backpressure", "s_link", kv)
        if dec in queue_of:  # the decode pool is an entry too: the KV joins its queue
            edge("s_link", queue_of[dec], _share(path_pools, dec, ("queueing", "memory_waits")) if handed else 0.0)
        else:
            dq = _share(path_pools, dec, ("queueing",))
            g.node("s_decode_queue", f"KV arrived, waiting for a {dec} batch\n"
                                     f"{_wait_stats(rq['decode_wait_s'].to_numpy())}\ncritical path {_pct(dq)}",
                   shape="cylinder")
            edge("s_link", "s_decode_queue", dq)
            pool_node(dec, "s_decode_queue")
    # where requests finish: every pool but the one that hands its prefills off
    ends = [f"s_pool_{name}" for name in (*run.entries, *([run.decode] if run.decode else []))
            if name != run.handoff]
    steady = (summary.get("steady") or {}).get("output_tokens_per_s")
    tput = summary.get("output_tokens_per_s")
    done = f"\n{steady:,.0f} output tokens/s (steady window)" if steady else f"\n{tput:,.0f} output tokens/s" if tput else ""
    g.node("s_done", "done" + done, shape="box", style="rounded,bold")
    for end in dict.fromkeys(ends):
        edge(end, "s_done", 0.0)
    return g, path_pools


def render_bottlenecks(run: Path | RunData, out: Path, cost_model=None) -> list[str]:
    """Draw the bottleneck view of a run (its directory, or its data) into ``out`` (.svg, .png
    or .dot)."""
    return write(bottleneck_dot(RunAnalysis(run), cost_model), Path(out))


def _canvas(name: str, title: str) -> graphviz.Digraph:
    return graphviz.Digraph(name, graph_attr={"rankdir": "TB", "fontname": "Helvetica", "fontsize": "11",
                                              "compound": "true", "label": title, "labelloc": "t", "ranksep": "0.35"},
                            node_attr={"fontname": "Helvetica", "fontsize": "9"},
                            edge_attr={"color": "#888888", "arrowsize": "0.6"})


def bottleneck_parts(analysis: RunAnalysis, cost_model=None) -> tuple[graphviz.Digraph, graphviz.Digraph | None]:
    """The two parts of the bottleneck view as clusters: the stages, and the bottleneck pool's
    representative iteration (None for a run without iterations)."""
    from frontier_dag.dsl import trace_config

    run = analysis.run
    _, graph = trace_config(run.config, run.origin)
    stages, path_pools = stage_graph(analysis, graph)
    it = run.iterations
    if not len(it):
        return stages, None
    pool, share = bottleneck_pool(analysis, path_pools)
    row, count = median_iteration(run, pool)
    rebuilt = rebuild_iteration(run, row, cost_model)
    sub = iteration_dot(rebuilt.graph, rebuilt.deployment, rebuilt.report, layers=0, ranks=4)
    sub.name = "cluster_representative_iteration"
    seqs, prefill = int(it["num_seqs"].iat[row]), int(it["prefill_tokens"].iat[row])
    why = f"{_pct(share)} of the critical path" if share > 0 else "the busiest; the run has no attribution"
    sub.graph_attr.update(label=f"representative iteration of the bottleneck pool {pool} ({why})\n"
                                f"the median of its {count:,} iterations: {rebuilt.pool}[{rebuilt.replica}] at "
                                f"{rebuilt.start_us / 1e6:,.3f} s, {seqs} seqs, {prefill} prefill tokens\n"
                                f"recorded {_fmt_us(rebuilt.recorded_us)}, rebuilt DAG "
                                f"{_fmt_us(rebuilt.report.iteration_time_us)}",
                          style="rounded", color="#999999")
    sub.graph_attr.pop("rankdir", None)
    sub.graph_attr.pop("labelloc", None)
    return stages, sub


def bottleneck_dot(analysis: RunAnalysis, cost_model=None) -> graphviz.Digraph:
    """The bottleneck view of an analysed run as one DOT graph."""
    dot = _canvas("bottlenecks", f"bottlenecks of {analysis.run.label}")
    for part in bottleneck_parts(analysis, cost_model):
        if part is not None:
            dot.subgraph(part)
    return dot


def standalone(part: graphviz.Digraph) -> graphviz.Digraph:
    """One part of the view as a graph of its own (to draw apart)."""
    dot = _canvas(part.name.removeprefix("cluster_"), "")
    dot.subgraph(part)
    return dot
