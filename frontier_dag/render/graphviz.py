"""Graphviz views of an iteration: a box per stage, the critical path bold and red.

Drawings stay readable for big models (``frontier_dag.render.fold``): each run of identical
layers is drawn once, in a box labelled with its layer range and count (``layers 0-79
x80``), and per layer only the ``ranks`` slowest EP ranks of an op are drawn. Stages sit
side by side (``direction="TB"``, each stage top-down) or one above the other
(``direction="LR"``, each stage left to right); ``stage`` draws one stage. Nodes are
filled with their pool's colour; the stage's box names its pools.
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
from frontier_dag.render.fold import Group, chains, drawn_edges, fold

CRITICAL = "#d62728"
POOL_COLORS = {"colocated": "#eef5fb", "prefill": "#eef7ee", "decode": "#fdf3e7", "attention": "#f3eefa", "ffn": "#fbeef3"}
LINK_COLOR = "#f0f0f0"
DIRECTIONS = ("TB", "LR")


def _fmt_us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} µs"


def pool_title(name: str, deployment: Deployment) -> str:
    pool = deployment.pools[name]
    dp = "" if pool.role == "ffn" else f", dp {pool.attention_dp}"  # an FFN pool has no attention
    gpu = deployment.pool_hardware[name].name
    return f"pool {name} ({pool.role}): {pool.gpus} x {gpu}, tp {pool.dense_tp}, ep {pool.ep}{dp}, x{pool.replicas}"


def _row(graph: EventGraph, report: IterationReport, group: Group, micro_batches: int) -> tuple[str, str, str]:
    """(name, time, note) of a drawn op."""
    first = graph.graph.nodes[report.compiled.nodes[group.members[0]]]
    name = first["op"]
    if first["micro_batch"] is not None and micro_batches > 1:
        name += f" mb{first['micro_batch']}"
    if group.folded_ranks:
        return f"{name} +{group.folded_ranks} ranks", f"≤ {_fmt_us(group.per_layer_us(report))}", ""
    if group.rank is not None:
        name += f" rank {group.rank}"
    slack = group.slack_us(report)
    note = f"slack {_fmt_us(slack)}" if slack > 1e-3 * max(report.iteration_time_us, 1e-9) else ""
    return name, _fmt_us(group.per_layer_us(report)), note


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _table(rows: list[tuple[str, str, str, bool]]) -> str:
    """An HTML-like label: one row per op, its name left, its time right, critical ones red;
    a single op on two lines (name over time) to keep side-by-side ops narrow."""
    if len(rows) == 1:
        name, time, note, on_path = rows[0]
        color = f' color="{CRITICAL}"' if on_path else ""
        below = _html(time) + (f'<br/><font point-size="8">{_html(note)}</font>' if note else "")
        return f'<<font{color}>{_html(name)}<br/>{below}</font>>'
    cells = []
    for name, time, note, on_path in rows:
        color = f' color="{CRITICAL}"' if on_path else ""
        extra = f'<td align="right"><font{color} point-size="8">{_html(note)}</font></td>' if note else "<td></td>"
        cells.append(f'<tr><td align="left"><font{color}>{_html(name)}</font></td>'
                     f'<td align="right"><font{color}>{_html(time)}</font></td>{extra}</tr>')
    return f'<<table border="0" cellspacing="0" cellpadding="1">{"".join(cells)}</table>>'


def _pipeline_stage(graph: EventGraph, report, folded, run) -> str:
    """`` on pp[1]`` for layers that run on a pipeline stage's GPUs."""
    nodes = report.compiled.nodes
    stages = {graph.resources[graph.graph.nodes[int(nodes[v])]["resource"]].pp_stage
              for v, r in folded.run_of.items() if r == run} - {None}
    return f" on pp[{min(stages)}]" if len(stages) == 1 else ""


def _stage_label(stage: str, graph: EventGraph, deployment: Deployment, report: IterationReport,
                 attrs: list[dict]) -> str:
    """A stage box's title: its time, its pools and its links."""
    spec = graph.stages[stage]
    role_to_name = {p.role: name for name, p in deployment.pools.items()}
    links = sorted({graph.resources[a["resource"]].name.removeprefix("link:") for a in attrs
                    if a["stage"] == stage and graph.resources[a["resource"]].kind == "link"})
    parts = [f"stage {stage}: {_fmt_us(report.stage_times_us.get(stage, 0.0))}"]
    if spec.serves != "transfer":
        parts += [pool_title(role_to_name[r], deployment) for r in spec.pools if r in role_to_name]
    pipe = report.pipeline.get(stage)
    if pipe is not None:
        times = ", ".join(f"pp[{k}] {_fmt_us(t)}" for k, t in enumerate(pipe.stages_us))
        parts.append(f"pipeline stages {times}; slowest pp[{pipe.slowest_stage}]: with {len(pipe.stages_us)} batches "
                     f"in flight one leaves every {_fmt_us(pipe.period_us)}")
    return "\n".join(parts + [f"link {link}" for link in links])


def iteration_dot(graph: EventGraph, deployment: Deployment, report: IterationReport, layers: int = 0,
                  ranks: int = 4, stage: str | None = None, direction: str = "TB") -> graphviz.Digraph:
    """The DOT graph of one iteration: the first ``layers`` layers of each stage apart, the
    rest folded into runs of identical layers; ``stage`` alone, when given."""
    if stage is not None and stage not in graph.stages:
        raise FrontierDagError(f"--stage {stage}: {graph.name} has no such stage; its stages are "
                               f"{', '.join(graph.stages)}")
    if direction not in DIRECTIONS:
        raise FrontierDagError(f"direction {direction!r}: use TB (top-down) or LR (left to right)")
    compiled = report.compiled
    attrs = [graph.graph.nodes[n] for n in compiled.nodes]
    positions = [v for v, a in enumerate(attrs) if stage is None or a["stage"] == stage]
    folded = fold(graph, report, positions, layers=layers, ranks=ranks)
    edges = drawn_edges(folded, report)
    critical = set(report.path_positions)
    first = {key: attrs[group.members[0]] for key, group in folded.groups.items()}
    on_path = {key: any(m in critical for m in group.members) for key, group in folded.groups.items()}
    plain = {key for key, a in first.items()
             if a["kind"] != "sync" and graph.resources[a["resource"]].kind != "link" and not folded.groups[key].folded_ranks}
    boxes = chains(folded, edges, {key: a["resource"] for key, a in first.items()}, plain)
    time = report.stage_times_us[stage] if stage is not None else report.iteration_time_us
    title = f"{graph.name}" + (f", stage {stage}" if stage else "") + f": iteration {_fmt_us(time)}"
    dot = graphviz.Digraph(graph.name, graph_attr={"rankdir": direction, "fontname": "Helvetica", "fontsize": "11",
                                                    "label": title, "labelloc": "t", "newrank": "true",
                                                    "nodesep": "0.15", "ranksep": "0.22"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "white",
                                      "fontname": "Helvetica", "fontsize": "9", "margin": "0.06,0.03",
                                      "height": "0.3"},
                           edge_attr={"color": "#888888", "arrowsize": "0.5"})
    box_of: dict[tuple, str] = {}
    # stage -> run (None: outside the layers) -> node ids
    placed: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for i, chain in enumerate(boxes):
        node_id = f"g{i}"
        a = first[chain[0]]
        resource = graph.resources[a["resource"]]
        micro_batches = graph.stages[a["stage"]].micro_batches
        rows = [(*_row(graph, report, folded.groups[key], micro_batches), on_path[key]) for key in chain]
        # a chain's ops mostly share their slack: say it where it changes
        rows = [(n, t, note if j == 0 or note != rows[j - 1][2] else "", c) for j, (n, t, note, c) in enumerate(rows)]
        many_pools = len(graph.stages[a["stage"]].pools) > 1
        fill = LINK_COLOR if resource.kind == "link" else POOL_COLORS.get(resource.pool, "#f4f4f4") if many_pools else "white"
        node = {"label": _table(rows), "fillcolor": fill}
        if any(on_path[key] for key in chain):
            node.update(color=CRITICAL, penwidth="2.2")
        if a["kind"] == "sync":
            node.update(shape="diamond", label=f"{rows[0][0]}", fontcolor=CRITICAL if rows[0][3] else "black")
        if resource.kind == "link":
            node.update(shape="cds", margin="0.2,0.04")
        dot.node(node_id, **node)
        for key in chain:
            box_of[key] = node_id
        placed[a["stage"]][folded.groups[chain[0]].run].append(node_id)
    for stage_name, runs in placed.items():
        spec = graph.stages[stage_name]
        with dot.subgraph(name=f"cluster_stage_{stage_name}") as box:
            single = len(spec.pools) == 1 and spec.serves != "transfer"
            box.attr(label=_stage_label(stage_name, graph, deployment, report, attrs), style="filled,rounded",
                     fontsize="10", color="#bbbbbb",
                     fillcolor=POOL_COLORS.get(spec.pools[0], "#f4f4f4") if single else "#fafafa")
            for run, node_ids in runs.items():
                if run is None:
                    for node_id in node_ids:
                        box.node(node_id)
                    continue
                path_us = sum(float(report.duration_us[v]) for v in critical if folded.run_of.get(v) == run)
                label = run.label + _pipeline_stage(graph, report, folded, run) + (
                    f": {_fmt_us(path_us / run.count)} a layer, {_fmt_us(path_us)} on the critical path" if path_us else "")
                with box.subgraph(name=f"cluster_run_{stage_name}_{run.first}") as inner:
                    inner.attr(label=label, style="dashed,rounded", color="#777777", fillcolor="none", fontsize="9")
                    for node_id in node_ids:
                        inner.node(node_id)
    drawn = set()
    for (a, b), critical_edge in edges.items():
        u, v = box_of[a], box_of[b]
        if u == v or (u, v) in drawn:
            continue
        drawn.add((u, v))
        edge = {"color": CRITICAL, "penwidth": "2.2"} if critical_edge else {}
        if first[a]["stage"] != first[b]["stage"]:
            # stages are separate iterations: the hand-off between them must not stack them
            edge.update(constraint="false", style="dashed")
        dot.edge(u, v, **edge)
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
