"""The recorded dependency graph of a run, and its re-evaluation with other weights.

Nodes are the run's iterations (weight: their duration), one KV transfer per handed-off
request (weight: its transfer time, and the engine's handoff after it) and one arrival per
request (weight: the engine's intake, ``engine_overheads.request_us``, after it). Edges are what the
simulator waited on, as it recorded them (frontier_dag.sim.iteration_log):

* stream order: an iteration follows the previous one of its replica (its *chain*);
* wake-ups: an idle replica restarted by an arrival, a KV arrival or freed memory, and a
  request queued again after a preemption waiting for what the preempting iteration
  waited for (``waited_for_kind``/``waited_for`` of iterations.parquet);
* hand-off: a transfer waits for the request's first token (after a preemption, for the
  iteration that finished its recompute) and, when the decode pool had no KV blocks
  (backpressure), for what freed them (``handoff_iteration``, ``transfer_waited_for`` of
  requests.parquet);
* closed loop: a client's next request waits for its previous one to finish
  (``follows_request``).

A request's milestones follow its batches: its first token comes with the iteration that
ends its prefill and its last with the iteration that ends its decode. Admission is
*soft*: a request joins a running replica's next batch without holding the replica up, so
if it is ready only after its recorded batch started (possible with other weights) its
milestones shift by that lateness, ``max(batch end, ready + batch span)``; the replica's
other requests are not delayed.

Evaluating the graph (forward in time) with the recorded weights reproduces the recorded
times; with scaled weights it predicts the run with the same batches (``evaluate``).
Iterations of a chain between two wake-ups form a *segment* whose times are a cumulative
sum, so evaluation loops over segment heads, transfers and arrivals, not over iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from frontier_dag.analysis.run_data import RunData
from frontier_dag.errors import FrontierDagError
from frontier_dag.sim.iteration_log import Node

#: Float rounding between the recorded start times (seconds) and their re-evaluation (µs
#: sums): far below 1 ns. Intervals shorter than this are empty.
ROUNDING_US = 1e-3
#: The recorded dependencies a run directory must hold (written since they were recorded).
RECORDED = {"iterations": ("waited_for_kind", "waited_for"),
            "requests": ("first_scheduled_iteration", "first_token_iteration", "handoff_iteration", "decode_admitted_iteration",
                         "finish_iteration", "transfer_waited_for_kind", "transfer_waited_for", "follows_request")}

#: Kinds of a predecessor: a node (``MEMORY``, ``CAUSE``) or a request's milestone
#: (``FIRST_TOKEN``, ``FINISH``: the id is the request's).
MEMORY, CAUSE, FIRST_TOKEN, FINISH = "memory", "cause", "first_token", "finish"


@dataclass
class RequestNodes:
    """Per request, the node that marks each milestone (-1 where there is none)."""

    first_iter: np.ndarray   # iteration that first schedules it
    prefill_iter: np.ndarray  # iteration that completes its prefill (its first token)
    handoff_iter: np.ndarray  # iteration after which its KV was (last) handed off
    admit_iter: np.ndarray   # decode iteration that admits it after the hand-off
    memory_node: np.ndarray  # what freed the decode blocks its transfer waited for: a decode
                             # iteration, or the KV transfer whose arrival led to a preemption
    finish_iter: np.ndarray  # iteration that emits its last token


class RecordedGraph:
    def __init__(self, run: RunData):
        self.run = run
        it, rq = run.iterations, run.requests
        for table, columns in RECORDED.items():
            missing = [c for c in columns if c not in getattr(run, table).columns]
            if missing:
                raise FrontierDagError(f"{run.run_dir}: {table}.parquet lacks the recorded dependencies "
                                       f"({', '.join(missing)}): it was written by an older frontier-dag; simulate "
                                       "the config again (`frontier-dag simulate RUN_DIR/config.yaml --out NEW_DIR`)")
        self.ni, self.nr = len(it), len(rq)
        ni, nr = self.ni, self.nr
        self.N = ni + 2 * nr
        #: iteration node of each row of iterations.parquet (the table is sorted by chain)
        self.node_of_row = np.empty(ni, dtype=np.int64)
        self.node_of_row[run.log_rows] = np.arange(ni)
        self.chain = run.chain_index()
        prev = np.arange(ni) - 1
        if ni:
            prev[run.chain_lo] = -1
        self.prev = prev
        # recorded times (µs)
        self.start0 = np.zeros(self.N)
        self.dur0 = np.zeros(self.N)
        self.start0[:ni] = it["start_s"].to_numpy(dtype=np.float64) * 1e6
        self.dur0[:ni] = it["duration_us"].to_numpy(dtype=np.float64)
        arrival = rq["arrival_s"].to_numpy() * 1e6
        ts, te = rq["transfer_start_s"].to_numpy() * 1e6, rq["transfer_end_s"].to_numpy() * 1e6
        has_xfer = np.isfinite(ts) & np.isfinite(te)
        self.has_xfer = has_xfer
        self.start0[ni:ni + nr] = np.where(has_xfer, ts, 0.0)
        #: each transfer's time on the link; its node holds the engine's handoff after it as well
        self.transfer_us = np.where(has_xfer, te - ts, 0.0)
        self.dur0[ni:ni + nr] = self.transfer_us + np.where(has_xfer, run.handoff_us, 0.0)
        self.start0[ni + nr:] = arrival
        self.dur0[ni + nr:] = run.intake_us  # an arrival node ends when the request reaches the scheduler
        self.release = np.full(self.N, -np.inf)
        self.unexplained = 0  # heads whose recorded start no recorded edge explains
        self.mismatched = 0  # heads the graph would start later than recorded (an edge too many)
        self.think_us = run.config.workload.think_time_s * 1e6 if run.clients is not None else 0.0
        self.follows = rq["follows_request"].to_numpy().astype(np.int64)
        self.nodes = self._request_nodes()
        self.ext: dict[int, list[tuple[int, str]]] = {}
        self._edges(arrival)
        self._order_heads()
        #: the recorded weights' evaluation: reproduces the recorded times
        self.base = self.evaluate(self.dur0[:, None])

    # -- node ids --------------------------------------------------------------------------
    def xfer(self, r):
        return self.ni + np.asarray(r)

    def arr(self, r):
        return self.ni + self.nr + np.asarray(r)

    def kind(self, v: int) -> str:
        return "iteration" if v < self.ni else ("transfer" if v < self.ni + self.nr else "arrival")

    def request_of(self, v: int) -> int:
        return (v - self.ni) % self.nr if v >= self.ni else -1

    # -- building --------------------------------------------------------------------------
    def iteration_nodes(self, rows: np.ndarray) -> np.ndarray:
        """Iteration nodes of rows of iterations.parquet (-1 stays -1)."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.where(rows >= 0, self.node_of_row[np.maximum(rows, 0)] if self.ni else -1, -1)

    def ref_nodes(self, kinds: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Nodes of recorded references (iteration_log.Node kind, row or request id); -1 for none."""
        kinds, ids = np.asarray(kinds), np.asarray(ids, dtype=np.int64)
        out = np.full(len(ids), -1, dtype=np.int64)
        it = kinds == Node.ITERATION
        out[it] = self.iteration_nodes(ids[it])
        xfer = kinds == Node.TRANSFER
        out[xfer] = self.xfer(ids[xfer])
        arr = kinds == Node.ARRIVAL
        out[arr] = self.arr(ids[arr])
        return out

    def _request_nodes(self) -> RequestNodes:
        rq = self.run.requests
        col = lambda name: self.iteration_nodes(rq[name].to_numpy())  # noqa: E731
        memory = self.ref_nodes(rq["transfer_waited_for_kind"].to_numpy(), rq["transfer_waited_for"].to_numpy())
        return RequestNodes(col("first_scheduled_iteration"), col("first_token_iteration"), col("handoff_iteration"),
                            col("decode_admitted_iteration"), np.where(self.has_xfer, memory, -1),
                            col("finish_iteration"))

    def _add(self, v: int, u: int, kind: str) -> None:
        if u >= 0:
            self.ext.setdefault(int(v), []).append((int(u), kind))

    def _edges(self, arrival: np.ndarray) -> None:
        run, n, ni, nr = self.run, self.nodes, self.ni, self.nr
        for r in np.flatnonzero(self.has_xfer).tolist():
            if n.handoff_iter[r] == n.prefill_iter[r]:
                self._add(ni + r, r, FIRST_TOKEN)
            else:  # handed off again after a preemption, when its recompute ended
                self._add(ni + r, n.handoff_iter[r], CAUSE)
            self._add(ni + r, n.memory_node[r], MEMORY)
        it = run.iterations
        after = self.ref_nodes(it["waited_for_kind"].to_numpy(), it["waited_for"].to_numpy())
        end = self.start0 + self.dur0
        for i in np.flatnonzero(after != self.prev).tolist():  # woken up, not by its replica's previous iteration
            u = int(after[i])
            if u < 0:
                self.release[i] = self.start0[i]  # no recorded predecessor: keep its start
            elif not ni <= u < ni + nr or (self.has_xfer[u - ni] and end[u] <= self.start0[i] + ROUNDING_US):
                self._add(i, u, CAUSE)
            # else a wake-up by an earlier KV transfer of a request handed off again after a
            # preemption: the graph holds its last transfer only (evaluate keeps the start
            # where its replica's previous iteration does not explain it)
        sent = self.follows >= 0  # closed loop: sent when the request it follows finished
        self.release[ni + nr:] = np.where(sent, -np.inf, arrival)
        for k in np.flatnonzero(sent).tolist():
            self._add(ni + nr + k, int(self.follows[k]), FINISH)
            self.start0[ni + nr + k] = arrival[k] - self.think_us  # the finish it follows
            self.dur0[ni + nr + k] = self.think_us + run.intake_us

    def _order_heads(self) -> None:
        ni, nr = self.ni, self.nr
        is_head = np.zeros(self.N, dtype=bool)
        is_head[:ni] = self.prev < 0
        is_head[list(self.ext)] = True
        is_head[ni:] = True
        is_head[ni:ni + nr] = self.has_xfer
        is_head[:ni] |= np.isfinite(self.release[:ni])
        heads = np.flatnonzero(is_head)
        # at equal times: arrivals, then transfers (after the transfers they waited for: a KV
        # transfer of no duration may wait for another's), then iterations
        depth = np.zeros(nr, dtype=np.int64)
        for r in np.flatnonzero(self.has_xfer).tolist():
            u = self.nodes.memory_node[r]
            while ni <= u < ni + nr and depth[r] < nr:
                depth[r] += 1
                u = self.nodes.memory_node[u - ni]
        kind_rank = np.zeros(len(heads), dtype=np.int64)
        kind_rank[heads < ni] = nr + 2
        xfer = (heads >= ni) & (heads < ni + nr)
        kind_rank[xfer] = 1 + depth[heads[xfer] - ni]
        order = np.lexsort((heads, kind_rank, self.start0[heads] + self.dur0[heads], self.start0[heads]))
        self.heads = heads[order]
        self.hid = np.full(self.N, -1, dtype=np.int64)
        self.hid[self.heads] = np.arange(len(self.heads))
        # head of every iteration: the latest head at or before it in its chain
        marks = np.where(is_head[:ni], np.arange(ni), 0)
        self.head_of = np.maximum.accumulate(marks) if ni else np.zeros(0, dtype=np.int64)

    # -- evaluation --------------------------------------------------------------------------
    def _weights(self, w: np.ndarray) -> np.ndarray:
        w = np.array(w, dtype=np.float64)
        arrivals = w[self.ni + self.nr:]
        # a request reaches the scheduler the engine's intake after it was sent, and a closed-loop
        # request is sent think time after the finish it follows
        arrivals[:] = self.run.intake_us
        arrivals[self.follows >= 0] += self.think_us
        return w

    def evaluate(self, weights: np.ndarray) -> Evaluation:
        """Start times of every head for ``weights`` ``(N, S)``, one column per scenario: the
        recorded batches and order, with other durations. The first evaluation (the recorded
        weights) also checks the graph against the recorded times."""
        ni = self.ni
        weights = self._weights(weights)
        S = weights.shape[1]
        cd = np.cumsum(weights[:ni], axis=0) if ni else np.zeros((0, S))
        ev = Evaluation(self, weights, np.zeros((len(self.heads), S)), cd, cd - weights[:ni])
        recording = not hasattr(self, "base")
        prev, release, ext = self.prev, self.release, self.ext
        sh = ev.sh
        for j, h in enumerate(self.heads.tolist()):
            cands: list[np.ndarray] = []
            for u, kind in ext.get(h, ()):
                cands.append(ev.finish(u) if kind in (CAUSE, MEMORY) else ev.milestone(u, kind))
            q = prev[h] if h < ni else -1
            if q >= 0:
                cands.append(ev.finish(q))
            if np.isfinite(release[h]):
                cands.append(np.full(S, release[h]))
            if not cands:
                cands.append(np.full(S, self.start0[h]))
            start = np.max(cands, axis=0)
            if recording:  # the recorded weights must reproduce the recorded start
                gap = self.start0[h] - start[0]
                if gap > ROUNDING_US:  # waited on something not recorded: keep its recorded start
                    release[h] = self.start0[h]
                    self.unexplained += 1
                    start = np.maximum(start, self.start0[h])
                elif gap < -ROUNDING_US:
                    self.mismatched += 1
            sh[j] = start
        return ev


@dataclass
class Evaluation:
    """Times of one evaluation of a RecordedGraph, one column per scenario."""

    graph: RecordedGraph
    weights: np.ndarray
    sh: np.ndarray  # start of every head (H, S)
    cd: np.ndarray  # cumulative weights of iterations, and the same before each row
    cd_prev: np.ndarray

    def finish_many(self, nodes: np.ndarray) -> np.ndarray:
        """Finish times ``(len(nodes), S)`` of nodes (-1 entries give NaN rows)."""
        g = self.graph
        nodes = np.asarray(nodes, dtype=np.int64)
        out = np.full((len(nodes), self.sh.shape[1]), np.nan)
        ok = nodes >= 0
        v = nodes[ok]
        it = v < g.ni
        rows = np.empty((len(v), self.sh.shape[1]))
        vi = v[it]
        h = g.head_of[vi]
        rows[it] = self.sh[g.hid[h]] + self.cd[vi] - self.cd_prev[h]
        vo = v[~it]
        rows[~it] = self.sh[g.hid[vo]] + self.weights[vo]
        out[ok] = rows
        return out

    def start_many(self, nodes: np.ndarray) -> np.ndarray:
        nodes = np.asarray(nodes, dtype=np.int64)
        return self.finish_many(nodes) - np.where(nodes[:, None] >= 0, self.weights[np.maximum(nodes, 0)], np.nan)

    def finish(self, u: int) -> np.ndarray:
        g = self.graph
        if u < g.ni:
            h = g.head_of[u]
            return self.sh[g.hid[h]] + self.cd[u] - self.cd_prev[h]
        return self.sh[g.hid[u]] + self.weights[u]

    def milestone(self, r: int, kind: str) -> np.ndarray:
        return self.milestones(np.array([r]), kind)[0]

    def milestones(self, rs: np.ndarray, kind: str) -> np.ndarray:
        """First-token or finish times ``(len(rs), S)`` of requests ``rs`` (soft admission:
        a request ready after its recorded batch started shifts by its lateness)."""
        g, n = self.graph, self.graph.nodes
        rs = np.asarray(rs, dtype=np.int64)
        first = self._soft(n.prefill_iter[rs], n.first_iter[rs], self.finish_many(g.arr(rs)))
        if kind == FIRST_TOKEN:
            return first
        fin_node = n.finish_iter[rs]
        handed = g.has_xfer[rs] & (n.admit_iter[rs] >= 0)
        out = np.empty_like(first)
        if handed.any():
            out[handed] = self._soft(fin_node[handed], n.admit_iter[rs[handed]], self.finish_many(g.xfer(rs[handed])))
        rest = ~handed
        if rest.any():
            end = self.finish_many(fin_node[rest])
            span = end - self.finish_many(n.prefill_iter[rs[rest]])
            out[rest] = np.maximum(end, first[rest] + span)
        return out

    def _soft(self, last: np.ndarray, batch: np.ndarray, ready: np.ndarray) -> np.ndarray:
        end = self.finish_many(last)
        span = end - self.start_many(batch)
        return np.maximum(end, np.where(np.isnan(span), end, ready + span))
