"""The recorded dependency graph of a run, and its re-evaluation with other weights.

Nodes are the run's iterations (weight: their duration), one KV transfer per handed-off
request (weight: its transfer time) and one arrival per request. Edges are what the
simulator waited on:

* stream order: an iteration follows the previous one of its replica (its *chain*);
* wake-ups: an idle replica restarted by an arrival, a KV arrival or freed memory
  (``cause``/``cause_request`` of iterations.parquet);
* hand-off: a transfer waits for the request's first token and, when the decode pool had
  no KV blocks (backpressure), for the decode iteration that freed them;
* closed loop: a client's next request waits for its previous one to finish.

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

TOL_US = 1e-3  # 1 ns: times recorded by the same float expression agree far better

#: Kinds of a predecessor: a node (``MEMORY``, ``CAUSE``) or a request's milestone
#: (``FIRST_TOKEN``, ``FINISH``: the id is the request's).
MEMORY, CAUSE, FIRST_TOKEN, FINISH = "memory", "cause", "first_token", "finish"


@dataclass
class RequestNodes:
    """Per request, the node that marks each milestone (-1 where there is none)."""

    first_iter: np.ndarray   # iteration that first schedules it
    prefill_iter: np.ndarray  # iteration that completes its prefill (its first token)
    admit_iter: np.ndarray   # decode iteration that admits it after the hand-off
    memory_iter: np.ndarray  # decode iteration whose freed blocks let its transfer start
    finish_iter: np.ndarray  # iteration that emits its last token


class RecordedGraph:
    def __init__(self, run: RunData):
        self.run = run
        it, rq = run.iterations, run.requests
        self.ni, self.nr = len(it), len(rq)
        ni, nr = self.ni, self.nr
        self.N = ni + 2 * nr
        start_s = it["start_s"].to_numpy(dtype=np.float64)
        end_s = start_s + it["duration_us"].to_numpy(dtype=np.float64) * 1e-6  # as the simulator adds them
        self.chain = run.chain_index()
        prev = np.arange(ni) - 1
        if ni:
            prev[run.chain_lo] = -1
        self.prev = prev
        # recorded times (µs)
        self.start0 = np.zeros(self.N)
        self.dur0 = np.zeros(self.N)
        self.start0[:ni] = start_s * 1e6
        self.dur0[:ni] = it["duration_us"].to_numpy(dtype=np.float64)
        arrival = rq["arrival_s"].to_numpy() * 1e6
        ts, te = rq["transfer_start_s"].to_numpy() * 1e6, rq["transfer_end_s"].to_numpy() * 1e6
        has_xfer = np.isfinite(ts) & np.isfinite(te)
        self.has_xfer = has_xfer
        self.start0[ni:ni + nr] = np.where(has_xfer, ts, 0.0)
        self.dur0[ni:ni + nr] = np.where(has_xfer, te - ts, 0.0)
        self.start0[ni + nr:] = arrival
        self.release = np.full(self.N, -np.inf)
        self.unexplained = 0  # heads whose recorded start no recorded edge explains
        self.mismatched = 0  # heads the graph would start later than recorded (an edge too many)
        self.think_us = run.config.workload.think_time_s * 1e6 if run.clients is not None else 0.0
        self.nodes = self._request_nodes(start_s, end_s)
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

    def milestone_node(self, r: int, kind: str) -> int:
        """The iteration that marks request ``r``'s first token or finish."""
        return int((self.nodes.prefill_iter if kind == FIRST_TOKEN else self.nodes.finish_iter)[r])

    # -- building --------------------------------------------------------------------------
    def _locate(self, pool: str | None, replicas: np.ndarray, times_s: np.ndarray, side: str,
                start_s: np.ndarray, end_s: np.ndarray, any_replica: bool = False) -> np.ndarray:
        """Per request, the iteration of ``pool``'s replica that starts (``side='start'``) or
        ends at ``times_s``; -1 where none does."""
        run = self.run
        out = np.full(len(times_s), -1, dtype=np.int64)
        if pool is None or self.ni == 0:
            return out
        values = start_s if side == "start" else end_s
        ok = np.isfinite(times_s) & (replicas >= 0)
        for c, (p, rep) in enumerate(run.chains):
            if p != pool:
                continue
            lo, hi = run.chain_lo[c], run.chain_hi[c]
            mine = ok & (out < 0) & ((replicas == rep) | any_replica)
            if not mine.any():
                continue
            idx = np.flatnonzero(mine)
            t = times_s[idx]
            vals = values[lo:hi]
            k = np.searchsorted(vals, t)
            for cand in (k - 1, k):
                cand = np.clip(cand, 0, hi - lo - 1)
                hit = np.abs(vals[cand] - t) <= 1e-9 + 1e-13 * np.abs(t)
                sel = hit & (out[idx] < 0)
                out[idx[sel]] = lo + cand[sel]
        return out

    def _request_nodes(self, start_s, end_s) -> RequestNodes:
        run, rq = self.run, self.run.requests
        pr = rq["prefill_replica"].to_numpy().astype(np.int64)
        dr = rq["decode_replica"].to_numpy().astype(np.int64)
        first = self._locate(run.entry, pr, rq["first_scheduled_s"].to_numpy(), "start", start_s, end_s)
        prefill = self._locate(run.entry, pr, rq["first_token_s"].to_numpy(), "end", start_s, end_s)
        admit = self._locate(run.decode, dr, rq["decode_admitted_s"].to_numpy(), "start", start_s, end_s)
        waited = self.has_xfer & (rq["transfer_wait_s"].to_numpy() > 1e-12)
        mem_t = np.where(waited, rq["transfer_start_s"].to_numpy(), np.nan)
        memory = self._locate(run.decode, dr, mem_t, "end", start_s, end_s)
        memory = np.where(memory >= 0, memory,
                          self._locate(run.decode, dr, mem_t, "end", start_s, end_s, any_replica=True))
        fin = rq["finish_s"].to_numpy()
        on_decode = dr >= 0
        finish = np.where(on_decode, self._locate(run.decode, dr, fin, "end", start_s, end_s),
                          self._locate(run.entry, pr, fin, "end", start_s, end_s))
        return RequestNodes(first, prefill, admit, memory, finish)

    def _add(self, v: int, u: int, kind: str) -> None:
        if u >= 0:
            self.ext.setdefault(int(v), []).append((int(u), kind))

    def _edges(self, arrival: np.ndarray) -> None:
        run, rq, n, ni, nr = self.run, self.run.requests, self.nodes, self.ni, self.nr
        for r in np.flatnonzero(self.has_xfer).tolist():
            self._add(ni + r, r, FIRST_TOKEN)
            self._add(ni + r, n.memory_iter[r], MEMORY)
        it = run.iterations
        cause = it["cause"].to_numpy()
        who = it["cause_request"].to_numpy()
        for i in np.flatnonzero(cause != 0).tolist():
            c, x = int(cause[i]), int(who[i])
            if c == 1 and 0 <= x < nr:
                self._add(i, ni + nr + x, CAUSE)
            elif c in (2, 3) and 0 <= x < nr and self.has_xfer[x]:
                self._add(i, ni + x, CAUSE)
            else:
                self.release[i] = self.start0[i]  # no recorded predecessor: keep its start
        if run.clients is None:
            self.release[ni + nr:] = arrival
            return
        clients = run.clients
        done = np.flatnonzero(np.isfinite(rq["finish_s"].to_numpy()))
        order = done[np.argsort(rq["finish_s"].to_numpy()[done], kind="stable")]
        self.release[ni + nr:ni + nr + min(clients, nr)] = arrival[:clients]
        for j, r in enumerate(order.tolist()):
            k = clients + j
            if k >= nr:
                break
            self._add(ni + nr + k, r, FINISH)
            self.start0[ni + nr + k] = arrival[k] - self.think_us  # the finish it follows
            self.dur0[ni + nr + k] = self.think_us

    def _order_heads(self) -> None:
        ni, nr = self.ni, self.nr
        is_head = np.zeros(self.N, dtype=bool)
        is_head[:ni] = self.prev < 0
        is_head[list(self.ext)] = True
        is_head[ni:] = True
        is_head[ni:ni + nr] = self.has_xfer
        is_head[:ni] |= np.isfinite(self.release[:ni])
        heads = np.flatnonzero(is_head)
        kind_rank = np.where(heads < ni, 2, np.where(heads < ni + nr, 1, 0))
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
        w[self.ni + self.nr:] = 0.0
        if self.run.clients is not None:
            # a closed-loop arrival comes think time after the finish it follows
            w[self.ni + self.nr + self.run.clients:] = self.think_us
        return w

    def evaluate(self, weights: np.ndarray) -> Evaluation:
        """Start times of every head for ``weights`` ``(N, S)``, one column per scenario: the
        recorded batches and order, with other durations. The first evaluation (the recorded
        weights) also checks the graph against the recorded times."""
        ni = self.ni
        weights = self._weights(weights)
        S = weights.shape[1]
        cd = np.cumsum(weights[:ni], axis=0) if ni else np.zeros((0, S))
        ev = Evaluation(self, weights, np.zeros((len(self.heads), S)), np.full(len(self.heads), -1, dtype=np.int64),
                        cd, cd - weights[:ni])
        recording = not hasattr(self, "base")
        prev, release, ext = self.prev, self.release, self.ext
        sh, bind = ev.sh, ev.bind
        for j, h in enumerate(self.heads.tolist()):
            cands: list[tuple[int, np.ndarray]] = []
            preds = ext.get(h, ())
            for u, kind in preds:
                if kind in (CAUSE, MEMORY):
                    cands.append((u, ev.finish(u)))
                else:  # a request's milestone
                    cands.append((self.milestone_node(u, kind), ev.milestone(u, kind)))
            q = prev[h] if h < ni else -1
            if q >= 0:
                cands.insert(1 if preds and preds[0][1] == CAUSE else 0, (-2, ev.finish(q)))
            if np.isfinite(release[h]):
                cands.append((-1, np.full(S, release[h])))
            if not cands:
                cands.append((-1, np.full(S, self.start0[h])))
            start = np.max([v for _, v in cands], axis=0)
            if recording:
                gap = self.start0[h] - start[0]
                if gap > TOL_US:  # waited on something not recorded: keep its recorded start
                    release[h] = self.start0[h]
                    self.unexplained += 1
                    cands.append((-1, np.full(S, self.start0[h])))
                    start = np.maximum(start, self.start0[h])
                elif gap < -TOL_US:
                    self.mismatched += 1
            sh[j] = start
            top = start[0] - TOL_US
            bind[j] = next(u for u, v in cands if v[0] >= top)
        return ev


@dataclass
class Evaluation:
    """Times of one evaluation of a RecordedGraph, one column per scenario."""

    graph: RecordedGraph
    weights: np.ndarray
    sh: np.ndarray  # start of every head (H, S)
    bind: np.ndarray  # per head, its binding predecessor in scenario 0: a node, -2 its chain, -1 a release
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
