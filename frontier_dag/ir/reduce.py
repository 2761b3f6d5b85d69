"""Series-parallel reduction of a node-weighted DAG into a short numpy program.

A chain's length is the sum of its weights; parallel branches between the same
endpoints (EP ranks between dispatch and barrier) contribute their max. Applying
both rules until neither applies turns a typical iteration DAG, thousands of
nodes, into a handful of vectorised steps over the template costs; repeated
layers become coefficients. Whatever does not reduce (the grid of ping-pong
micro-batches) is evaluated level by level on the few reduced nodes.

Quantities are columns of a matrix ``Q (k, q)``: first the ``T`` template costs,
then a zero column, then each sum or max the reduction introduced, in an order
where inputs precede outputs.

>>> # a -> {b, c} -> d, templates 0..3: time = a + max(b, c) + d
>>> program = reduce_series_parallel([[], [0], [0], [1, 2]], np.arange(4), 4)
>>> program.evaluate(np.array([[1.0, 5.0, 2.0, 1.0]]))
array([7.])
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from frontier_dag.ir.levels import Levels

SOURCE, SINK = -1, -2


class ReducedProgram:
    """Evaluates the longest path for ``k`` iterations from template costs ``(k, T)``."""

    def __init__(self, num_templates: int):
        self.num_templates = num_templates
        self.zero = num_templates  # column that stays 0
        self.definitions: list[tuple[str, tuple[int, ...], tuple[float, ...]]] = []
        self._known: dict[tuple, int] = {}
        self.steps: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = []
        self.result: tuple[np.ndarray, np.ndarray] | None = None  # a linear combination
        self.residual = None  # (weight columns, Levels, sink predecessor positions, straight-line fn)
        self._direct: bool | None = None
        self.residual_preds: list[list[int]] = []
        self._finish_fn = None
        self._compiled: tuple | None = None  # (kernels module or None, pred_ptr, pred_idx), on first use

    # -- building ------------------------------------------------------------------------------
    def quantity(self, kind: str, inputs: tuple[int, ...], coefs: tuple[float, ...] = ()) -> int:
        key = (kind, inputs, coefs)
        if key not in self._known:
            self._known[key] = self.num_templates + 1 + len(self.definitions)
            self.definitions.append(key)
        return self._known[key]

    def materialise(self, combination: dict[int, float]) -> int:
        """A column holding the linear combination (reusing a column when it is one)."""
        items = sorted(combination.items())
        if not items:
            return self.zero
        if len(items) == 1 and items[0][1] == 1.0:
            return items[0][0]
        return self.quantity("sum", tuple(q for q, _ in items), tuple(c for _, c in items))

    def finalise(self) -> None:
        """Group definitions by depth and kind into padded, vectorised steps."""
        depth = np.zeros(self.num_templates + 1 + len(self.definitions), dtype=np.int64)
        for i, (_, inputs, _) in enumerate(self.definitions):
            depth[self.num_templates + 1 + i] = 1 + max(depth[q] for q in inputs)
        groups: dict[tuple[int, str], list[int]] = defaultdict(list)
        for i, (kind, _, _) in enumerate(self.definitions):
            column = self.num_templates + 1 + i
            groups[(int(depth[column]), kind)].append(column)
        for (_, kind), columns in sorted(groups.items()):
            defs = [self.definitions[c - self.num_templates - 1] for c in columns]
            width = max(len(d[1]) for d in defs)
            index = np.empty((len(defs), width), dtype=np.int64)
            coef = np.zeros((len(defs), width)) if kind == "sum" else None
            for row, (_, inputs, coefs) in enumerate(defs):
                pad = self.zero if kind == "sum" else inputs[0]
                index[row] = list(inputs) + [pad] * (width - len(inputs))
                if coef is not None:
                    coef[row, : len(coefs)] = coefs
            self.steps.append((kind, np.array(columns), index, coef))

    # -- evaluating ----------------------------------------------------------------------------
    @property
    def num_columns(self) -> int:
        return self.num_templates + 1 + len(self.definitions)

    def linear_coefficients(self) -> np.ndarray | None:
        """When the longest path is a fixed weighted sum of template costs, its weights
        ``(T,)``; otherwise None."""
        if self.steps or self.result is None:
            return None
        index, coef = self.result
        dense = np.zeros(self.num_templates + 1)
        np.add.at(dense, index, coef)
        return dense[: self.num_templates]

    def evaluate_one(self, costs: np.ndarray) -> float:
        """The longest path for one iteration's costs ``(T,)`` (the simulator's hot path)."""
        if not self.steps and self.result is not None:
            index, coef = self.result
            if self._direct is None:
                self._direct = bool((index < self.num_templates).all())
            if self._direct:
                return float(costs[index] @ coef)
        return float(self.evaluate(costs[None, :])[0])

    def gradient(self, costs: np.ndarray) -> tuple[float, np.ndarray]:
        """The longest path for one iteration's costs ``(T,)`` and its gradient: how many
        times each template lies on the critical path. The longest path is positively
        homogeneous in the costs, so ``total == gradient @ costs`` (Euler), which splits the
        iteration time exactly among the templates."""
        q = np.empty(self.num_columns)
        q[: self.num_templates] = costs
        q[self.zero] = 0.0
        chosen = []
        for kind, columns, index, coef in self.steps:
            gathered = q[index]
            if kind == "sum":
                q[columns] = (gathered * coef).sum(axis=1)
                chosen.append(None)
            else:
                best = gathered.argmax(axis=1)
                q[columns] = gathered[np.arange(len(columns)), best]
                chosen.append(index[np.arange(len(columns)), best])
        grad = np.zeros(self.num_columns)
        if self.result is not None:
            index, coef = self.result
            total = float(q[index] @ coef)
            np.add.at(grad, index, coef)
        else:
            columns, levels, sink_preds, _ = self.residual
            kernels, ptr, idx = self._residual_kernels()
            if kernels is not None:
                finish = kernels.residual_finish(q[columns], ptr, idx)
                path = kernels.residual_path(finish, ptr, idx, sink_preds)
                total = float(finish[path[0]])
                np.add.at(grad, columns[path], 1.0)
            else:
                finish = self._finishes(q[columns].tolist())
                v = max(sink_preds.tolist(), key=lambda u: (finish[u], -u))
                total = float(finish[v])
                while True:
                    grad[columns[v]] += 1.0
                    preds = self.residual_preds[v]
                    if not preds:
                        break
                    v = max(preds, key=lambda u: (finish[u], -u))
        for (kind, columns, index, coef), best in zip(reversed(self.steps), reversed(chosen), strict=True):
            if kind == "sum":
                np.add.at(grad, index, coef * grad[columns][:, None])
            else:
                np.add.at(grad, best, grad[columns])
        grad[self.zero] = 0.0
        return total, grad[: self.num_templates]

    def _residual_kernels(self) -> tuple:
        """The compiled residual longest path (``frontier_dag.ir.kernels``) and the residual's
        predecessors as CSR arrays; (None, ...) where numba is missing."""
        if self._compiled is None:
            try:
                from frontier_dag.ir import kernels
            except ImportError:  # the generated Python function serves instead
                kernels = None
            lengths = [len(preds) for preds in self.residual_preds]
            ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
            ptr[1:] = np.cumsum(lengths)
            idx = np.array([u for preds in self.residual_preds for u in preds], dtype=np.int64)
            self._compiled = (kernels, ptr, idx)
        return self._compiled

    @property
    def _finishes(self):
        """Generated function: residual node weights -> every residual node's finish time."""
        if self._finish_fn is None:
            self._finish_fn = _straight_line(self.residual_preds, self.residual[2], every=True)
        return self._finish_fn

    def evaluate(self, costs: np.ndarray) -> np.ndarray:
        k = costs.shape[0]
        q = np.empty((k, self.num_columns))
        q[:, : self.num_templates] = costs
        q[:, self.zero] = 0.0
        for kind, columns, index, coef in self.steps:
            gathered = q[:, index]
            q[:, columns] = (gathered * coef).sum(axis=2) if kind == "sum" else gathered.max(axis=2)
        if self.result is not None:
            index, coef = self.result
            return q[:, index] @ coef
        columns, levels, sink_preds, straight_line = self.residual
        if k == 1:
            kernels, ptr, idx = self._residual_kernels()
            if kernels is not None:
                return np.array([kernels.residual_longest(q[0, columns], ptr, idx, sink_preds)])
            return np.array([straight_line(q[0, columns].tolist())])
        finish = levels.finish(q[:, columns])
        return finish[:, sink_preds].max(axis=1)


def reduce_series_parallel(pred_lists: list[list[int]], node_template: np.ndarray, num_templates: int,
                           node_scale: np.ndarray | None = None) -> ReducedProgram:
    """Reduce a DAG (predecessor lists in topological order; node i costs template
    ``node_template[i]``, times ``node_scale[i]`` where given) to a ReducedProgram computing
    its longest path."""
    program = ReducedProgram(num_templates)
    n = len(pred_lists)
    if n == 0:
        program.result = (np.array([program.zero]), np.array([0.0]))
        return program
    pred: dict[int, set[int]] = {v: set(p) for v, p in enumerate(pred_lists)}
    succ: dict[int, set[int]] = {v: set() for v in range(n)}
    for v, ps in enumerate(pred_lists):
        for u in ps:
            succ[u].add(v)
    pred[SOURCE], succ[SOURCE], pred[SINK], succ[SINK] = set(), set(), set(), set()
    for v in range(n):
        if not pred[v]:
            pred[v].add(SOURCE)
            succ[SOURCE].add(v)
        if not succ[v]:
            succ[v].add(SINK)
            pred[SINK].add(v)
    scale = [1.0] * n if node_scale is None else [float(c) for c in node_scale]
    weight: dict[int, dict[int, float]] = {v: {int(node_template[v]): scale[v]} for v in range(n)}
    alive = list(range(n))  # topological order of the live nodes

    changed = True
    while changed:
        changed = False
        # series: fold v into its only predecessor u when v is u's only successor
        for v in alive:
            if v not in weight or len(pred[v]) != 1:
                continue
            (u,) = pred[v]
            if u < 0 or len(succ[u]) != 1:
                continue
            for q, c in weight.pop(v).items():
                weight[u][q] = weight[u].get(q, 0.0) + c
            succ[u] = succ.pop(v)
            for w in succ[u]:
                pred[w].discard(v)
                pred[w].add(u)
            del pred[v]
            changed = True
        alive = [v for v in alive if v in weight]
        # parallel: nodes with the same predecessors and successors become their max
        groups: dict[tuple[frozenset, frozenset], list[int]] = defaultdict(list)
        for v in alive:
            groups[(frozenset(pred[v]), frozenset(succ[v]))].append(v)
        for members in groups.values():
            if len(members) < 2:
                continue
            columns = tuple(sorted({program.materialise(weight[v]) for v in members}))
            keep = members[0]
            weight[keep] = {columns[0] if len(columns) == 1 else program.quantity("max", columns): 1.0}
            for v in members[1:]:
                for u in pred.pop(v):
                    succ[u].discard(v)
                for w in succ.pop(v):
                    pred[w].discard(v)
                del weight[v]
            changed = True
        alive = [v for v in alive if v in weight]

    if len(alive) == 1:
        combination = weight[alive[0]]
        items = sorted(combination.items())
        program.result = (np.array([q for q, _ in items]), np.array([c for _, c in items]))
    else:
        position = {v: i for i, v in enumerate(alive)}
        columns = np.array([program.materialise(weight[v]) for v in alive])
        residual_preds = [sorted(position[u] for u in pred[v] if u >= 0) for v in alive]
        sink_preds = np.array(sorted(position[u] for u in pred[SINK]))
        program.residual = (columns, Levels.build(len(alive), residual_preds), sink_preds,
                            _straight_line(residual_preds, sink_preds))
        program.residual_preds = residual_preds
    program.finalise()
    return program


def _straight_line(pred_lists: list[list[int]], sink_preds: np.ndarray, every: bool = False):
    """Generate a Python function ``weights -> longest path`` (``every``: the list of every
    node's finish time) with one statement per node: for a single iteration this beats
    vectorised level steps (no per-step numpy overhead)."""
    lines = ["def longest_path(w):"]
    for v, preds in enumerate(pred_lists):
        if not preds:
            lines.append(f"    f{v} = w[{v}]")
        elif len(preds) == 1:
            lines.append(f"    f{v} = w[{v}] + f{preds[0]}")
        else:
            lines.append(f"    f{v} = w[{v}] + max({', '.join(f'f{u}' for u in preds)})")
    ends = [f"f{int(u)}" for u in sink_preds]
    if every:
        lines.append(f"    return [{', '.join(f'f{v}' for v in range(len(pred_lists)))}]")
    else:
        lines.append(f"    return {ends[0]}" if len(ends) == 1 else f"    return max({', '.join(ends)})")
    namespace: dict = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - code generated from our own graph
    return namespace["longest_path"]
