"""The directed graph under an EventGraph: the part of ``networkx.DiGraph`` the simulator uses.

Importing networkx costs more CPU than a short simulation (about 0.15 s: it loads all of
its algorithms and scans the installed packages for backends), and a traced workflow needs
only a graph with node and edge attributes, a topological order and a cycle check. ``Dag``
is that graph, with networkx's names and semantics (``nodes[n]``, ``nodes(data=...)``,
``edges``, ``pred``, ``predecessors``, ``add_node``, ``add_edge``, ``subgraph(...).copy()``),
and it keeps networkx's orders: nodes, edges and neighbours iterate in the orders a
``DiGraph`` built by the same calls would, ``subgraph`` included, so every result is the
one networkx gave. ``to_networkx()`` returns a ``networkx.DiGraph`` copy for its algorithms.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Iterator
from typing import Any


class NodeView:
    """``dag.nodes``: iterate the nodes, ``nodes[n]`` is ``n``'s attribute dict, and
    ``nodes(data=True)`` / ``nodes(data="key", default=None)`` pair each node with its data."""

    __slots__ = ("_node",)

    def __init__(self, node: dict):
        self._node = node

    def __iter__(self) -> Iterator:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __contains__(self, n) -> bool:
        return n in self._node

    def __getitem__(self, n) -> dict[str, Any]:
        return self._node[n]

    def items(self):
        return self._node.items()

    def __call__(self, *, data: bool | str = False, default: Any = None) -> Iterator:
        if data is False:
            return iter(self._node)
        if data is True:
            return iter(self._node.items())
        return ((n, d.get(data, default)) for n, d in self._node.items())


class EdgeView:
    """``dag.edges``: iterate ``(u, v)`` pairs (by ``u`` in node order, then ``u``'s successors
    in the order they were added), ``edges[u, v]`` is the edge's attribute dict, and
    ``edges(data=True)`` / ``edges(data="key", default=None)`` add each edge's data (networkx's
    ``edges(nodes)`` is not taken: a positional argument is an error, never misread as ``data``)."""

    __slots__ = ("_succ",)

    def __init__(self, succ: dict):
        self._succ = succ

    def __iter__(self) -> Iterator[tuple]:
        return ((u, v) for u, nbrs in self._succ.items() for v in nbrs)

    def __len__(self) -> int:
        return sum(len(nbrs) for nbrs in self._succ.values())

    def __contains__(self, edge) -> bool:
        u, v = edge
        return u in self._succ and v in self._succ[u]

    def __getitem__(self, edge) -> dict[str, Any]:
        u, v = edge
        return self._succ[u][v]

    def __call__(self, *, data: bool | str = False, default: Any = None) -> Iterator[tuple]:
        if data is False:
            return iter(self)
        if data is True:
            return ((u, v, d) for u, nbrs in self._succ.items() for v, d in nbrs.items())
        return ((u, v, d.get(data, default)) for u, nbrs in self._succ.items() for v, d in nbrs.items())


class Dag:
    """A directed graph with attributes on nodes and edges (see the module docstring)."""

    def __init__(self):
        self._node: dict[Hashable, dict[str, Any]] = {}
        self._succ: dict[Hashable, dict[Hashable, dict[str, Any]]] = {}
        self._pred: dict[Hashable, dict[Hashable, dict[str, Any]]] = {}

    # -- reading -------------------------------------------------------------------------------
    @property
    def nodes(self) -> NodeView:
        return NodeView(self._node)

    @property
    def edges(self) -> EdgeView:
        return EdgeView(self._succ)

    @property
    def pred(self) -> dict[Hashable, dict[Hashable, dict[str, Any]]]:
        """Node -> its predecessors (-> the edge's attributes). Read it, do not change it."""
        return self._pred

    @property
    def succ(self) -> dict[Hashable, dict[Hashable, dict[str, Any]]]:
        """Node -> its successors (-> the edge's attributes). Read it, do not change it."""
        return self._succ

    def __iter__(self) -> Iterator:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __contains__(self, n) -> bool:
        return n in self._node

    def number_of_nodes(self) -> int:
        return len(self._node)

    def number_of_edges(self) -> int:
        return len(self.edges)

    def predecessors(self, n) -> Iterator:
        return iter(self._pred[n])

    def successors(self, n) -> Iterator:
        return iter(self._succ[n])

    def is_directed(self) -> bool:
        return True

    # -- building ------------------------------------------------------------------------------
    def add_node(self, n, **attr) -> None:
        if n not in self._node:
            self._node[n], self._succ[n], self._pred[n] = attr, {}, {}
        else:
            self._node[n].update(attr)

    def add_edge(self, u, v, **attr) -> None:
        for n in (u, v):
            if n not in self._node:
                self.add_node(n)
        data = self._succ[u].get(v, {})
        data.update(attr)
        self._succ[u][v] = self._pred[v][u] = data

    def remove_edge(self, u, v) -> None:
        try:
            del self._succ[u][v]
            del self._pred[v][u]
        except KeyError:
            raise KeyError(f"the edge {u}-{v} is not in the graph") from None

    # -- parts and copies ----------------------------------------------------------------------
    def subgraph(self, nodes: Iterable) -> Dag:
        """The graph induced by ``nodes``, sharing the attribute dicts (as networkx's subgraph
        view does); ``.copy()`` it to change attributes apart. It is built as networkx copies
        its view: the nodes in the view's order (where the kept nodes are fewer than half of
        all, the order of the set of them), then the edges by source node."""
        keep = {n for n in nodes if n in self._node}
        order = (n for n in keep if n in self._node) if 2 * len(keep) < len(self._node) else \
            (n for n in self._node if n in keep)
        sub = Dag()
        for n in order:
            sub._node[n], sub._succ[n], sub._pred[n] = self._node[n], {}, {}
        for u in sub._node:
            for v, data in self._succ[u].items():
                if v in keep:
                    sub._succ[u][v] = sub._pred[v][u] = data
        return sub

    def copy(self) -> Dag:
        """An independent copy (attribute dicts copied), built as networkx's ``copy`` builds one:
        nodes in order, then edges by source node."""
        out = Dag()
        for n, d in self._node.items():
            out.add_node(n, **d)
        for u, nbrs in self._succ.items():
            for v, d in nbrs.items():
                out.add_edge(u, v, **d)
        return out

    def to_networkx(self):
        """A ``networkx.DiGraph`` copy of this graph (networkx is imported here)."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from((n, dict(d)) for n, d in self._node.items())
        g.add_edges_from((u, v, dict(d)) for u, nbrs in self._succ.items() for v, d in nbrs.items())
        return g

    # -- order and cycles ----------------------------------------------------------------------
    def topological_order(self) -> list:
        """The topological order that breaks ties by the smallest node first (networkx's
        ``lexicographical_topological_sort``); raises ValueError where there is a cycle."""
        index = {n: i for i, n in enumerate(self._node)}
        waiting = {n: len(p) for n, p in self._pred.items() if p}
        ready = [(n, index[n], n) for n, p in self._pred.items() if not p]
        heapq.heapify(ready)
        order = []
        while ready:
            n = heapq.heappop(ready)[2]
            for child in self._succ[n]:
                waiting[child] -= 1
                if not waiting[child]:
                    del waiting[child]
                    heapq.heappush(ready, (child, index[child], child))
            order.append(n)
        if waiting:
            raise ValueError("the graph has a cycle")
        return order

    def is_acyclic(self) -> bool:
        try:
            self.topological_order()
        except ValueError:
            return False
        return True

    def find_cycle(self) -> list[tuple]:
        """The edges ``(u, v)`` of one cycle, in order (empty where there is none)."""
        done: set = set()
        for root in self._node:
            if root in done:
                continue
            path, on_path = [root], {root}
            stack = [iter(self._succ[root])]
            while stack:
                child = next(stack[-1], None)
                if child is None:
                    stack.pop()
                    finished = path.pop()
                    on_path.discard(finished)
                    done.add(finished)
                    continue
                if child in on_path:
                    cycle = path[path.index(child):]
                    return list(zip(cycle, [*cycle[1:], child], strict=True))
                if child not in done:
                    path.append(child)
                    on_path.add(child)
                    stack.append(iter(self._succ[child]))
        return []

