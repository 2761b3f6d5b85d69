"""Graphviz views of an iteration: pools as clusters, the critical path bold and red.

Big graphs are folded for reading: layers from ``layers`` on become one box per
stage, resource and micro-batch (``layers 2-31 x30``), and per layer only the
``ranks`` slowest EP ranks are drawn, the rest folded into one node.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import graphviz

from frontier_dag.analysis.iteration import IterationReport
from frontier_dag.config.run import Deployment
from frontier_dag.errors import FrontierDagError
from frontier_dag.ir.graph import EventGraph

CRITICAL = "#d62728"
POOL_COLORS = {"colocated": "#eef5fb", "prefill": "#eef7ee", "decode": "#fdf3e7", "attention": "#f3eefa", "ffn": "#fbeef3"}


def _fmt_us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} µs"


def iteration_dot(graph: EventGraph, deployment: Deployment, report: IterationReport,
                  layers: int = 2, ranks: int = 4) -> graphviz.Digraph:
    """The DOT graph of one iteration, folded by ``layers`` and ``ranks``."""
    compiled = report.compiled
    critical = set(report.path_positions)
    # group positions into display nodes
    group_of: dict[int, tuple] = {}
    for v, node in enumerate(compiled.nodes):
        a = graph.graph.nodes[node]
        if a["layer"] is not None and a["layer"] >= layers:
            # folded layers: one box per stream, and one for all EP ranks of a pool together
            # (a box per rank would put every rank back on the drawing)
            resource = graph.resources[a["resource"]]
            stream = a["resource"] if resource.rank is None else f"{resource.pool}.ep_rank[*]"
            group_of[v] = ("layers", a["stage"], stream, a["micro_batch"])
        else:
            group_of[v] = ("node", v)
    # fold EP ranks beyond the slowest `ranks` of each (stage, layer, micro-batch)
    by_rank_group: dict[tuple, list[int]] = defaultdict(list)
    for v, node in enumerate(compiled.nodes):
        a = graph.graph.nodes[node]
        if group_of[v][0] == "node" and graph.resources[a["resource"]].rank is not None:
            by_rank_group[(a["stage"], a["layer"], a["micro_batch"], a["op"])].append(v)
    for key, members in by_rank_group.items():
        members.sort(key=lambda v: (v not in critical, -report.duration_us[v]))
        for v in members[ranks:]:
            group_of[v] = ("ranks",) + key
    members_of: dict[tuple, list[int]] = defaultdict(list)
    for v, g in group_of.items():
        members_of[g].append(v)

    dot = graphviz.Digraph(graph.name, graph_attr={"rankdir": "TB", "fontname": "Helvetica", "fontsize": "11",
                                                    "label": f"{graph.name}: iteration {_fmt_us(report.iteration_time_us)}",
                                                    "labelloc": "t"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "white",
                                      "fontname": "Helvetica", "fontsize": "9"},
                           edge_attr={"color": "#888888", "arrowsize": "0.6"})
    ids = {g: f"g{i}" for i, g in enumerate(members_of)}
    clusters: dict[str, list[str]] = defaultdict(list)
    for g, members in members_of.items():
        first = graph.graph.nodes[compiled.nodes[members[0]]]
        resource = graph.resources[first["resource"]]
        on_path = any(v in critical for v in members)
        if g[0] == "node":
            v = members[0]
            where = " ".join(x for x in (f"L{first['layer']}" if first["layer"] is not None else "",
                                         f"mb{first['micro_batch']}" if first["micro_batch"] is not None else "") if x)
            label = f"{first['op']}\n{where}\n{_fmt_us(report.duration_us[v])}  slack {_fmt_us(report.slack_us[v])}".replace("\n\n", "\n")
        elif g[0] == "layers":
            layer_ids = sorted({graph.graph.nodes[compiled.nodes[v]]["layer"] for v in members})
            busy = sum(report.duration_us[v] for v in members)
            label = f"{g[2]} layers {layer_ids[0]}-{layer_ids[-1]} x{len(layer_ids)}\n{len(members)} ops, busy {_fmt_us(busy)}"
        else:
            slowest = max(report.duration_us[v] for v in members)
            label = f"{first['op']} L{first['layer']}\n+{len(members)} more ranks\nslowest {_fmt_us(slowest)}"
        attrs = {"label": label}
        if on_path:
            attrs.update(color=CRITICAL, penwidth="2.5", fontcolor=CRITICAL)
        if first["kind"] == "sync":
            attrs.update(shape="diamond")
        if resource.kind == "link":
            attrs.update(shape="cds")
        dot.node(ids[g], **attrs)
        clusters[f"link {resource.name.removeprefix('link:')}" if resource.kind == "link" else resource.pool].append(ids[g])
    pools = {p.role: (name, p) for name, p in deployment.pools.items()}
    for cluster, node_ids in clusters.items():
        with dot.subgraph(name=f"cluster_{cluster}") as sub:
            if cluster in pools:
                name, pool = pools[cluster]
                dp = "" if pool.role == "ffn" else f", dp {pool.attention_dp}"  # an FFN pool has no attention
                gpu = deployment.pool_hardware[name].name
                title = f"pool {name} ({cluster}): {pool.gpus} x {gpu}, tp {pool.tp}, ep {pool.ep}{dp}, x{pool.replicas}"
            else:
                title = cluster
            sub.attr(label=title, style="filled,rounded", fillcolor=POOL_COLORS.get(cluster, "#f4f4f4"), color="#bbbbbb")
            for node_id in node_ids:
                sub.node(node_id)
    seen = set()
    path_edges = set(zip(report.path_positions, report.path_positions[1:], strict=False))
    for v, preds in enumerate(compiled.pred_lists):
        for u in preds:
            a, b = group_of[u], group_of[v]
            if a == b or (a, b) in seen:
                continue
            seen.add((a, b))
            if (u, v) in path_edges:
                dot.edge(ids[a], ids[b], color=CRITICAL, penwidth="2.5")
            else:
                dot.edge(ids[a], ids[b])
    return dot


def write(dot: graphviz.Digraph, out: Path) -> list[str]:
    """Write ``out`` (.svg, .png or .dot). A .dot file is written in every case; without the
    ``dot`` binary an image cannot be made, and the returned notes say so."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png", "dot"):
        raise FrontierDagError(f"--out {out}: the file must end in .svg, .png or .dot")
    out.parent.mkdir(parents=True, exist_ok=True)
    dot_path = out if fmt == "dot" else out.with_suffix(".dot")
    dot_path.write_text(dot.source)
    if fmt == "dot":
        return []
    binary = shutil.which("dot")
    if binary is None:
        return [f"Graphviz's `dot` program is not installed, so {out} was not drawn; the graph is in {dot_path}. "
                "Install Graphviz (Debian: apt-get install graphviz) and run again, or render the .dot elsewhere."]
    result = subprocess.run([binary, f"-T{fmt}", str(dot_path), "-o", str(out)], capture_output=True, text=True)
    if result.returncode != 0:
        raise FrontierDagError(f"dot failed to draw {out}: {result.stderr.strip()}")
    return []
