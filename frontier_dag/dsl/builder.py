"""The tracer: the ``g`` a workflow receives, which records operations into an EventGraph.

A workflow declares the stages it runs (a pool's iteration), the resources that
execute operations, and for each layer and micro-batch the operations and what
they wait for:

    with g.stage("decode", pools=["decode"], serves="decode") as st:
        mb = st.micro_batches[0]
        for layer in g.layers():
            x = g.gemm("qkv_proj", on="decode", m=mb.tokens, n=..., k=..., after=x)

Ops on one resource run in program order (the tracer adds those edges). Sizes are
Syms over the micro-batch's statistics, bound per iteration. Misuse fails here,
with the workflow's file:line.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sys
import sysconfig
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.model import ModelConfig
from frontier_dag.config.run import Deployment, PoolConfig, Role
from frontier_dag.cost.queries import FAMILIES, QUERY_COLUMNS, RAGGED_COLUMNS
from frontier_dag.errors import WorkflowError
from frontier_dag.ir.graph import EventGraph, Resource, Stage, Template
from frontier_dag.ir.symbols import Sym, variables

_DSL_DIR = str(Path(__file__).resolve().parent)
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
ROLES: tuple[str, ...] = typing.get_args(Role)
WEIGHT_GROUPS = ("attention", "embeddings", "dense_ffn", "shared_experts", "experts")
_graph_ids = itertools.count()

#: Statistics of a micro-batch that symbolic shapes may use.
BATCH_STATS = (
    "tokens",          # new tokens this iteration (sum of q_lens)
    "seqs",            # sequences
    "prefill_tokens",  # new tokens of sequences in prefill (q_len > 1)
    "prefill_seqs",
    "decode_seqs",     # sequences generating one token
    "ctx_tokens",      # tokens already cached before the iteration
    "kv_tokens",       # ctx_tokens + tokens
    "kv_out_tokens",   # KV tokens of sequences whose prefill completes this iteration
)
DYNAMIC_FAMILIES = ("attention", "mla")


def _where() -> str:
    """file:line of the workflow code that called the tracer and, when that is a helper in
    another file (a block of ``workflows/layers.py``), the line that called the helper:
    ``workflows/layers.py:76 (from workflows/pd.py:49)``. The walk stops at the tracer's
    own frames (``trace()`` called the workflow), so a caller of ``trace()`` never shows."""
    frame = sys._getframe(1)
    while frame is not None and _engine_frame(frame):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    inner, outer = frame, None
    frame = frame.f_back
    while frame is not None and not frame.f_code.co_filename.startswith(_DSL_DIR):
        if not _engine_frame(frame) and frame.f_code.co_filename != inner.f_code.co_filename:
            outer = frame
            break
        frame = frame.f_back
    spot = f"{_shown(inner.f_code.co_filename)}:{inner.f_lineno}"
    return spot if outer is None else f"{spot} (from {_shown(outer.f_code.co_filename)}:{outer.f_lineno})"


def _engine_frame(frame) -> bool:
    """A frame of the tracer itself, of the standard library (``contextlib`` runs the body of
    ``with g.stage(...)``) or of generated code (``<string>``), not of a workflow."""
    filename = frame.f_code.co_filename
    if filename.startswith(_STDLIB) and "-packages" not in filename:
        return True
    return filename.startswith((_DSL_DIR, "<"))


def _shown(filename: str) -> str:
    """A file as error messages name it: relative to the project, or to the working directory."""
    if filename.startswith(_PACKAGE_ROOT):
        return _in_package(filename)
    parts = Path(filename).parts
    return "/".join(parts[-2:]) if "site-packages" in parts else os.path.relpath(filename)


@functools.cache
def _in_package(filename: str) -> str:
    """A project file relative to the project (asked for every traced op)."""
    return os.path.relpath(filename, _PACKAGE_ROOT)


@dataclass(frozen=True)
class Op:
    """A handle on a traced operation; pass it to ``after=`` of later ops."""

    node: int
    graph: int
    label: str

    def __repr__(self) -> str:
        return f"Op({self.label})"


class MicroBatch:
    """A slice of a stage's batch; its attributes are Syms bound per iteration."""

    #: queries each sequence attends with (1 + draft tokens when a decode step verifies them)
    queries_per_seq = 1

    def __init__(self, stage: str, index: int):
        self.stage = stage
        self.index = index
        self.key = f"{stage}.mb{index}"
        for stat in BATCH_STATS:
            setattr(self, stat, Sym.var(f"{self.key}.{stat}"))

    def __repr__(self) -> str:
        return f"MicroBatch({self.key})"


class StageView:
    def __init__(self, stage: Stage):
        self.name = stage.name
        self.pools = stage.pools
        self.micro_batches = [MicroBatch(stage.name, i) for i in range(stage.micro_batches)]

    @property
    def mb(self) -> MicroBatch:
        """The only micro-batch of a stage that does not split its batch."""
        if len(self.micro_batches) != 1:
            raise WorkflowError(f"{_where()}: stage {self.name} has {len(self.micro_batches)} micro-batches; index st.micro_batches")
        return self.micro_batches[0]


@dataclass(frozen=True)
class PoolView:
    """A pool of the deployment as a workflow sees it."""

    role: str
    name: str
    config: PoolConfig
    hardware: HardwareConfig

    @property
    def tp(self) -> int:
        """Tensor parallel size of the pool's attention and dense layers, whatever its role
        (an ffn pool's dense layers are split over all its GPUs per replica)."""
        return self.config.dense_tp

    @property
    def ep(self) -> int:
        return self.config.ep

    @property
    def dp(self) -> int:
        """Attention data parallelism (an FFN pool has no attention: 1)."""
        return 1 if self.role == "ffn" else self.config.attention_dp

    @property
    def gpus_per_replica(self) -> int:
        """All the GPUs of one replica, of every pipeline stage."""
        return self.config.gpus_per_replica

    @property
    def pp(self) -> int:
        """Pipeline stages of a replica (1: no pipeline parallelism)."""
        return self.config.pp

    @property
    def gpus_per_stage(self) -> int:
        """The GPUs that hold one layer (TP x DP, EP x expert TP): those of one pipeline
        stage, all the replica's without pipeline parallelism."""
        return self.config.gpus_per_stage

    def stage_layers(self, num_layers: int) -> list[int]:
        """Layers of each pipeline stage (``PoolConfig.stage_layers``)."""
        return self.config.stage_layers(num_layers)

    def placement(self, group: int) -> str:
        """intra_node when a group of ``group`` GPUs of this pool fits in one node."""
        return "intra_node" if group <= self.hardware.node.gpus_per_node else "inter_node"

    def stage_link_placement(self, stage: int) -> str:
        """The link that carries activations into pipeline stage ``stage`` from the one before:
        intra_node (NVLink) when both stages' GPUs lie in one node. A replica's GPUs are
        numbered from the start of a node, stage k holding GPUs k x gpus_per_stage to
        (k + 1) x gpus_per_stage - 1."""
        per_node, per_stage = self.hardware.node.gpus_per_node, self.gpus_per_stage
        first, last = (stage - 1) * per_stage, (stage + 1) * per_stage - 1
        return "intra_node" if first // per_node == last // per_node else "inter_node"


class Builder:
    """Records one trace of a workflow into an EventGraph."""

    def __init__(self, deployment: Deployment, name: str, params: dict[str, Any], micro_batches: int | None = None):
        """``micro_batches`` overrides every stage's (the overlap report traces a strategy
        again with one micro-batch per stage to say what m = 1 would take)."""
        self.deployment = deployment
        self._force_micro_batches = micro_batches
        self.model: ModelConfig = deployment.model
        self.hardware: HardwareConfig = deployment.hardware
        self.params = params
        self._id = next(_graph_ids)
        self.ir = EventGraph(name=name, params=dict(params))
        self._template_ids: dict[Template, int] = {}
        self._stream_tail: dict[tuple[str, str], int] = {}
        self._stage: Stage | None = None
        self._layer: int | None = None
        self._micro_batch: int | None = None
        self._weights: tuple[str, int | None] | None = None
        self._late_edges: list[tuple[int, int, str]] = []
        self._ancestor_cache: dict[int, tuple[int, set[int]]] = {}
        self._pools_by_role = {p.role: (name, p) for name, p in deployment.pools.items()}
        # pipeline parallelism: each pipelined pool's layer -> stage, and the activations
        # already sent from an op into a later stage ((node, stage) -> the op that received them)
        self._stage_of_layer: dict[str, list[int]] = {
            p.role: [k for k, count in enumerate(p.stage_layers(self.model.num_layers)) for _ in range(count)]
            for p in deployment.pools.values() if p.pp > 1}
        self._pp_sent: dict[tuple[int, int], int] = {}
        self._pp_forced: int | None = None

    # -- the deployment ------------------------------------------------------------------------
    def has_pool(self, role: str) -> bool:
        return role in self._pools_by_role

    def pool(self, role: str) -> PoolView:
        if role not in self._pools_by_role:
            raise WorkflowError(f"{_where()}: {self._unknown_role(role, f'workflow {self.ir.name} needs a pool with role')}")
        name, cfg = self._pools_by_role[role]
        return PoolView(role, name, cfg, self.deployment.pool_hardware.get(name, self.hardware))

    def _unknown_role(self, role: Any, what: str) -> str:
        """Why ``role`` names no pool of the deployment, and what to write instead."""
        have = ", ".join(sorted(self._pools_by_role)) or "none"
        pools = self.deployment.pools
        if isinstance(role, str) and role in pools and role not in ROLES:
            return (f"{what} {role!r}, which is the name of a pool in cluster.pools, not a role; the DSL names "
                    f"pools by role: use {pools[role].role!r}")
        if role not in ROLES:
            return f"{what} {role!r}, which is not a role; roles are {', '.join(ROLES)} (the config's pools have {have})"
        return f"{what} {role!r}; the config's pools have roles {have}. Add one under cluster.pools."

    # -- resources -----------------------------------------------------------------------------
    def stream(self, role: str, suffix: str | None = None) -> Resource:
        """The GPU stream of a pool (``decode``), or a side stream (``decode.comm``)."""
        self.pool(role)
        name = role if suffix is None else f"{role}.{suffix}"
        return self._declare(Resource(name, "gpu", role))

    def ep_ranks(self, role: str, ranks: int | None = None) -> list[Resource]:
        """One stream per EP rank of a pool: ``decode.ep_rank[0]`` ..."""
        count = ranks if ranks is not None else self.pool(role).ep
        return [self._declare(Resource(f"{role}.ep_rank[{r}]", "gpu", role, rank=r)) for r in range(count)]

    def link(self, src: str, dst: str) -> Resource:
        """The link that carries data from pool ``src`` to pool ``dst``."""
        self.pool(src)
        self.pool(dst)
        return self._declare(Resource(f"link:{src}->{dst}", "link", src, dst=dst))

    def _declare(self, resource: Resource) -> Resource:
        known = self.ir.resources.get(resource.name)
        if known is not None and known != resource:
            raise WorkflowError(f"{_where()}: resource {resource.name} declared twice differently")
        self.ir.resources[resource.name] = resource
        return resource

    def _resource(self, on: Resource | str | None, op: str) -> Resource:
        if on is None:
            raise WorkflowError(f"{_where()}: op {op!r} has no resource; pass on=<a stream, EP rank or link>")
        name = on.name if isinstance(on, Resource) else on
        if name not in self.ir.resources:
            known = ", ".join(sorted(self.ir.resources)) or "none yet"
            raise WorkflowError(f"{_where()}: op {op!r} runs on unknown resource {name!r}; declare it first with "
                                f"g.stream(), g.ep_ranks() or g.link() (declared: {known})")
        return self.ir.resources[name]

    # -- where requests enter ------------------------------------------------------------------
    def entry(self, pools: Iterable[str], *, rule: str | Callable[..., Any], params: dict[str, Any] | None = None) -> None:
        """New requests may enter the pools of the roles ``pools`` (each leads a stage that serves
        prefill or both), and ``rule`` picks one per request: a built-in rule's name
        (``round_robin``, ``least_outstanding_tokens``, ``by_prompt_length``) with its
        ``params``, or a callable ``rule(request, pools) -> pool`` (``frontier_dag.dsl.entry``).
        Without it, requests enter the one pool that prefills. The config's ``cluster.entry``
        overrides it."""
        from frontier_dag.dsl.entry import Entry, check_rule

        if self.ir.entry is not None:
            raise WorkflowError(f"{_where()}: g.entry is declared twice (first at {self.ir.entry.where})")
        pools = self._roles(pools, "g.entry")
        try:
            check_rule(rule, params if params is not None else {})
        except ValueError as exc:
            raise WorkflowError(f"{_where()}: g.entry: {exc}") from None
        self.ir.entry = Entry(pools, rule, dict(params or {}), _where())

    def _roles(self, pools: Iterable[str], what: str) -> tuple[str, ...]:
        """``pools=`` of ``what`` as a tuple of known roles, or the author's error."""
        if isinstance(pools, str) or not isinstance(pools, Iterable):
            raise WorkflowError(f"{_where()}: {what}: pools= takes a list of roles, such as pools=[{pools!r}]")
        pools = tuple(pools)
        for role in pools:
            if role not in self._pools_by_role:
                raise WorkflowError(f"{_where()}: {self._unknown_role(role, f'{what}: pools= names')}")
        return pools

    # -- scopes --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str, pools: Iterable[str], micro_batches: int = 1, serves: str = "both") -> Iterator[StageView]:
        """Ops traced inside belong to one iteration of the stage ``name``."""
        if self._stage is not None:
            raise WorkflowError(f"{_where()}: stage {name!r} opened inside stage {self._stage.name!r}; stages do not nest")
        if not isinstance(name, str) or not name.isidentifier():
            # batch variables are named stage.mbN.stat: a dot in the name would misread them
            raise WorkflowError(f"{_where()}: stage name {name!r} must be an identifier (letters, digits, _)")
        if name in self.ir.stages:
            raise WorkflowError(f"{_where()}: stage {name!r} is declared twice")
        if int(micro_batches) < 1:
            raise WorkflowError(f"{_where()}: stage {name!r} needs at least one micro-batch, got {micro_batches}")
        if serves not in ("prefill", "decode", "both", "transfer"):
            raise WorkflowError(f"{_where()}: stage {name!r}: serves must be prefill, decode, both or transfer")
        pools = self._roles(pools, f"stage {name!r}")
        if self._force_micro_batches is not None:
            micro_batches = self._force_micro_batches
        stage = Stage(name, pools, int(micro_batches), serves, _where())
        self.ir.stages[name] = stage
        self._stage = stage
        try:
            yield StageView(stage)
        finally:
            self._stage = None

    def speculate(self, queries_per_seq: int, tokens_per_step: float) -> None:
        """Declare that the open stage decodes speculatively: each sequence runs
        ``queries_per_seq`` tokens through the model per iteration (its last token and the
        draft tokens, verified together) and emits ``tokens_per_step`` tokens on average.
        The routing draws ``queries_per_seq`` tokens per sequence, and the simulator counts
        ``tokens_per_step`` tokens per iteration in TPOT and throughput."""
        stage = self._stage
        if stage is None or stage.serves != "decode":
            raise WorkflowError(f"{_where()}: g.speculate() declares how a decode stage emits tokens; call it inside "
                                "a stage with serves='decode'")
        if int(queries_per_seq) < 1 or not 1 <= tokens_per_step <= queries_per_seq:
            raise WorkflowError(f"{_where()}: g.speculate({queries_per_seq}, {tokens_per_step}): a sequence runs at "
                                "least 1 token and emits between 1 and that many tokens per step")
        stage.queries_per_seq, stage.tokens_per_step = int(queries_per_seq), float(tokens_per_step)

    def layers(self, count: int | None = None, start: int = 0) -> Iterator[int]:
        """Iterate over layer indices, tagging the ops traced in each pass with the layer."""
        saved = self._layer
        try:
            for layer in range(start, start + (self.model.num_layers if count is None else count)):
                self._layer = layer
                yield layer
        finally:  # also when the loop breaks early: later ops must not keep the last layer
            self._layer = saved

    @contextlib.contextmanager
    def scope(self, layer: int | None = None, micro_batch: int | None = None) -> Iterator[None]:
        saved = self._layer, self._micro_batch
        if layer is not None:
            self._layer = layer
        if micro_batch is not None:
            self._micro_batch = micro_batch
        try:
            yield
        finally:
            self._layer, self._micro_batch = saved

    @property
    def layer(self) -> int | None:
        """The layer that ``g.layers()`` (or ``g.scope``) is tracing, or None."""
        return self._layer

    @contextlib.contextmanager
    def weights(self, group: str, split: int | None = None) -> Iterator[None]:
        """Ops traced inside read the weights of ``group`` (attention, embeddings, dense_ffn,
        shared_experts, experts: the groups of ``ModelConfig.weight_bytes``), each GPU
        ``1/split`` of them (default: the pool's TP for dense groups, its GPUs per replica
        for experts). A pool holds the groups its ops read (``EventGraph.weight_groups``),
        whatever its role."""
        if group not in WEIGHT_GROUPS:
            raise WorkflowError(f"{_where()}: g.weights({group!r}): weight groups are {', '.join(WEIGHT_GROUPS)}")
        if split is not None and (not isinstance(split, int) or split < 1):
            raise WorkflowError(f"{_where()}: g.weights({group!r}, split={split!r}): split is a whole number >= 1")
        saved, self._weights = self._weights, (group, split)
        try:
            yield
        finally:
            self._weights = saved

    # -- operations ----------------------------------------------------------------------------
    def compute(self, name: str, on: Resource | str, family: str, *, after: Any = None,
                batch: MicroBatch | None = None, routing: tuple[MicroBatch, int, int] | None = None,
                kind: str = "compute", **fields: Any) -> Op:
        """Any operation named ``name``, priced by ``family`` with query columns ``fields``."""
        op = name
        if family not in FAMILIES and family not in DYNAMIC_FAMILIES and family != "sync":
            raise WorkflowError(f"{_where()}: op {op!r}: unknown cost family {family!r}; "
                                f"use one of {', '.join((*FAMILIES, *DYNAMIC_FAMILIES))}")
        resource = self._resource(on, op)
        if self._stage is None:
            raise WorkflowError(f"{_where()}: op {op!r} is outside any stage; trace it inside `with g.stage(...)`")
        self._check_placement(op, resource)
        for key, value in fields.items():
            if not isinstance(value, Sym | int | float | str | bool) and value is not None:
                raise WorkflowError(f"{_where()}: op {op!r}: field {key}={value!r} must be a number, a string or a Sym")
            foreign = [v for v in variables(value) if v.split(".")[0] != self._stage.name]
            if foreign:
                raise WorkflowError(f"{_where()}: op {op!r} in stage {self._stage.name!r} uses {foreign[0]}, a batch of "
                                    "another stage; an op may only size itself by its own stage's micro-batches")
        # batch= and routing= name the micro-batch the coster reads per iteration: it must be
        # one of this stage's, or pricing would look up a batch the stage never receives
        for arg, mb in (("batch", batch), ("routing", routing[0] if routing is not None else None)):
            if mb is None:
                continue
            if not isinstance(mb, MicroBatch):
                raise WorkflowError(f"{_where()}: op {op!r}: {arg}= takes a micro-batch (st.micro_batches[i]), "
                                    f"got {mb!r}")
            if mb.stage != self._stage.name:
                raise WorkflowError(f"{_where()}: op {op!r} in stage {self._stage.name!r} reads {mb.key}, a micro-batch "
                                    "of another stage; pass one of this stage's st.micro_batches")
        self._check_columns(op, family, fields, batch, routing)
        template = Template(
            family,
            tuple(sorted(fields.items())),
            batch.key if batch is not None else None,
            (routing[0].key, int(routing[1]), int(routing[2])) if routing is not None else None,
            self._gpu_of(resource),
        )
        micro_batch = self._micro_batch
        if micro_batch is None:
            keys = {v.split(".")[1] for f in fields.values() for v in variables(f)}
            keys |= {template.batch.split(".")[1]} if template.batch else set()
            keys |= {template.routing[0].split(".")[1]} if template.routing else set()
            if len(keys) == 1:
                micro_batch = int(keys.pop()[2:])
        return self._add(op, kind, resource, template, after, micro_batch)

    def gemm(self, name: str, on: Resource | str, *, m: Any, n: int, k: int, dtype: str | None = None, after: Any = None) -> Op:
        """``m`` tokens times a ``k`` x ``n`` weight."""
        return self.compute(name, on, "gemm", after=after, m=m, n=int(n), k=int(k), dtype=dtype or self.model.dtype)

    def elementwise(self, name: str, on: Resource | str, *, kind: str, tokens: Any, hidden: int,
                    dtype: str = "bf16", after: Any = None) -> Op:
        return self.compute(name, on, "elementwise", after=after, op=kind, num_tokens=tokens, hidden=int(hidden), dtype=dtype)

    def collective(self, name: str, on: Resource | str, family: str, *, bytes: Any, group: int,
                   placement: str, impl: str = "nccl", after: Any = None) -> Op:
        """A collective among ``group`` GPUs; ``bytes`` is each GPU's message."""
        return self.compute(name, on, family, after=after, kind="collective", bytes=bytes, group_size=int(group),
                            placement=placement, impl=impl)

    def transfer(self, name: str, on: Resource | str, *, bytes: Any, after: Any = None) -> Op:
        """Move ``bytes`` over a link (priced as point-to-point over the link's medium)."""
        resource = self._resource(on, name)
        if resource.kind != "link":
            raise WorkflowError(f"{_where()}: transfer {name!r} must run on a link (g.link(src, dst)), not on {resource.name}")
        return self.compute(name, resource, "p2p", after=after, kind="transfer", bytes=bytes,
                            placement=self._link_placement(resource))

    def sync(self, name: str, on: Resource | str, *, after: Any = None) -> Op:
        """A zero-time barrier: it completes when everything in ``after`` has."""
        return self.compute(name, on, "sync", after=after, kind="sync")

    def expert_routing(self, spec: dict | None) -> None:
        """Declare how tokens are routed to experts (``{kind: uniform|power_law|trace, alpha,
        path, redundant_experts}``); expert ops' token counts are drawn from it per iteration."""
        from frontier_dag.cost.routing import RoutingSpec

        self.ir.routing = RoutingSpec.parse(spec)

    def depend(self, before: Op, later: Op) -> None:
        """Order ``later`` after ``before`` even though ``later`` was traced first."""
        self._late_edges.append((self._node_of(before, "depend"), self._node_of(later, "depend"), _where()))

    # -- internals -----------------------------------------------------------------------------
    def _check_placement(self, op: str, resource: Resource) -> None:
        """An op runs on a pool its stage steps; a decode stage never runs on the prefill pool."""
        stage = self._stage
        if resource.kind == "gpu" and resource.pool == "prefill" and stage.serves == "decode":
            raise WorkflowError(f"{_where()}: op {op!r} of stage {stage.name!r}, which serves decode, runs on "
                                f"{resource.name}, a stream of the prefill pool; run decode ops on the decode pool's "
                                "streams (g.stream('decode')), and move KV there with g.transfer on g.link('prefill', "
                                "'decode')")
        ends = (resource.pool,) if resource.kind == "gpu" else (resource.pool, resource.dst)
        if not set(ends) & set(stage.pools):
            where = "a stream of the" if resource.kind == "gpu" else "a link of the"
            raise WorkflowError(f"{_where()}: op {op!r} runs on {resource.name}, {where} {' and '.join(ends)} pool, "
                                f"but stage {stage.name!r} steps pools {list(stage.pools)}; add {ends[0]!r} to its "
                                "pools= or run the op on a stream of one of them")

    def _check_columns(self, op: str, family: str, fields: dict[str, Any], batch, routing) -> None:
        """The query columns ``family`` is priced on are all given (the ragged ones come from
        ``batch=`` or ``routing=``)."""
        if family == "sync":
            return
        if family in QUERY_COLUMNS and any(c in RAGGED_COLUMNS - {"expert_tokens"} for c in QUERY_COLUMNS[family]):
            dynamic = "mla" if family.startswith("mla") else "attention"
            raise WorkflowError(f"{_where()}: op {op!r}: family {family!r} is priced on each sequence's lengths; use "
                                f"family {dynamic!r} with batch=<a micro-batch>, and the kernel (prefill, decode or "
                                "mixed) is chosen per iteration")
        columns = QUERY_COLUMNS[{"attention": "attention_decode", "mla": "mla_decode"}.get(family, family)]
        missing = [c for c in columns if c not in RAGGED_COLUMNS and c not in fields]
        if missing:
            raise WorkflowError(f"{_where()}: op {op!r}: family {family!r} is priced on "
                                f"{', '.join(c for c in columns if c not in RAGGED_COLUMNS)}; the call lacks "
                                f"{', '.join(missing)}: pass {', '.join(f'{c}=...' for c in missing)}")
        if family in ("attention", "mla") and batch is None:
            raise WorkflowError(f"{_where()}: op {op!r}: family {family!r} reads each sequence's lengths; pass "
                                "batch=<a micro-batch of this stage> (st.mb or st.micro_batches[i])")
        if family == "moe_grouped_gemm" and routing is None:
            raise WorkflowError(f"{_where()}: op {op!r}: family 'moe_grouped_gemm' reads the tokens routed to an EP "
                                "rank's experts; pass routing=(micro_batch, layer, rank)")

    def _link_placement(self, link: Resource) -> str:
        if link.pipeline_link:
            return self.pool(link.pool).stage_link_placement(link.pp_stage)
        src, dst = self.pool(link.pool), self.pool(link.dst)
        if src.hardware.name != dst.hardware.name:
            return "inter_node"  # different GPUs never share a node's NVLink
        choice = self.deployment.config.cluster.kv_link
        if choice != "auto":
            return "intra_node" if choice == "nvlink" else "inter_node"
        together = src.gpus_per_replica + dst.gpus_per_replica <= self.hardware.node.gpus_per_node
        return "intra_node" if together else "inter_node"

    def _gpu_of(self, resource: Resource) -> str | None:
        """The GPU that runs ops on ``resource`` when it is not the deployment's (see
        Template.gpu): its pool's; for a link between pools on different GPUs, the end with
        the slower network, which sets the transfer's pace."""
        if resource.kind == "link":
            ends = [self.pool(resource.pool).hardware, self.pool(resource.dst).hardware]
            hardware = min(ends, key=lambda hw: hw.network.bandwidth_bytes_per_s)
        else:
            hardware = self.pool(resource.pool).hardware
        return None if hardware.name == self.hardware.name else hardware.name

    def _node_of(self, dep: Any, op: str) -> int:
        if isinstance(dep, Op) and dep.graph == self._id and dep.node in self.ir.graph:
            return dep.node
        raise WorkflowError(f"{_where()}: op {op!r} depends on {dep!r}, which is not an op of this trace; "
                            "pass the Op that an earlier g.<op>(...) call returned")

    def _add(self, op: str, kind: str, resource: Resource, template: Template, after: Any, micro_batch: int | None) -> Op:
        if isinstance(after, str) or not (after is None or isinstance(after, Op | list | tuple | set | frozenset)):
            raise WorkflowError(f"{_where()}: op {op!r}: after= takes the Op that an earlier g.<op>(...) call returned, "
                                f"or a list of them, not {after!r}; keep the call's result (x = g.gemm(...)) and pass "
                                "after=x")
        deps = [] if after is None else [after] if isinstance(after, Op) else list(after)
        pred_nodes = [self._node_of(d, op) for d in deps if d is not None]
        if micro_batch is None and pred_nodes:
            # a barrier or transfer sized by no batch belongs to the micro-batch it waits for
            inherited = {self.ir.graph.nodes[p]["micro_batch"] for p in pred_nodes}
            if len(inherited) == 1:
                micro_batch = inherited.pop()
        if resource.kind == "gpu" and resource.pool in self._stage_of_layer:
            resource, pred_nodes = self._on_pipeline_stage(op, resource, pred_nodes, micro_batch)
        tid = self._template_ids.setdefault(template, len(self._template_ids))
        if tid == len(self.ir.templates):
            self.ir.templates.append(template)
        node = self.ir.graph.number_of_nodes()
        where = _where()
        self.ir.graph.add_node(node, kind=kind, op=op, resource=resource.name, stage=self._stage.name,
                               layer=self._layer, micro_batch=micro_batch, template=tid, where=where)
        if self._weights is not None:
            self.ir.graph.nodes[node]["weights"] = self._weights
        stream = (self._stage.name, resource.name)
        candidates = {p: "data" for p in pred_nodes}
        if stream in self._stream_tail:
            candidates.setdefault(self._stream_tail[stream], "stream")
        self._stream_tail[stream] = node
        for p in self._without_implied(candidates):
            self.ir.graph.add_edge(p, node, dep=candidates[p])
        label = self.ir.label(node)
        return Op(node, self._id, label)

    def _without_implied(self, preds: dict[int, str]) -> list[int]:
        """Drop a predecessor that is already an ancestor of another one: its edge adds no
        ordering (weights are non-negative), and leaving it out keeps the graph transitively
        reduced, which lets the compiler collapse series and parallel parts."""
        if len(preds) < 2:
            return list(preds)
        floor = min(preds)
        implied = set()
        for p in preds:
            implied |= self._ancestors_down_to(p, floor) & preds.keys()
        return [p for p in preds if p not in implied]

    def _ancestors_down_to(self, node: int, floor: int) -> set[int]:
        """Ancestors of ``node`` with ids >= ``floor`` (ids follow creation, a topological order).
        A node's ancestors never change once it exists, so the deepest search is cached."""
        cached = self._ancestor_cache.get(node)
        if cached is not None and cached[0] <= floor:
            return {p for p in cached[1] if p >= floor} if cached[0] < floor else cached[1]
        seen: set[int] = set()
        stack = [node]
        pred = self.ir.graph.pred
        while stack:
            for p in pred[stack.pop()]:
                if p >= floor and p not in seen:
                    seen.add(p)
                    stack.append(p)
        self._ancestor_cache[node] = (floor, seen)
        return seen

    # -- pipeline parallelism ----------------------------------------------------------------
    def _on_pipeline_stage(self, op: str, resource: Resource, preds: list[int], micro_batch: int | None
                           ) -> tuple[Resource, list[int]]:
        """Place an op of a pipelined pool on its pipeline stage's copy of ``resource``: the
        stage of the layer being traced, or, outside ``g.layers()``, of the latest stage among
        the ops of the pool it waits for (the first stage when none: the embedding). Where
        it waits for an op of an earlier stage, the activations travel there first
        (``_send_forward``), and it waits for their arrival instead."""
        role = resource.pool
        here = [self._pipeline_stage_of(p, role) for p in preds]
        if self._pp_forced is not None:
            stage = self._pp_forced
        elif self._layer is not None:
            stage = self._stage_of_layer[role][self._layer]
        else:
            stage = max((k for k in here if k is not None), default=0)
        moved = []
        for p, k in zip(preds, here, strict=True):
            if k is not None and k > stage:
                raise WorkflowError(f"{_where()}: op {op!r} runs on pipeline stage {stage} of pool {role} but waits for "
                                    f"{self.ir.label(p)} on stage {k}: activations only flow forward through the stages. "
                                    "Trace a layer's ops inside g.layers() so that each lands on its layer's stage")
            moved.append(p if k is None or k == stage else self._send_forward(p, role, k, stage, micro_batch))
        return self._stage_resource(resource, stage), moved

    def _pipeline_stage_of(self, node: int, role: str) -> int | None:
        """The pipeline stage of ``node`` when it is an op of pool ``role`` in this stage."""
        attrs = self.ir.graph.nodes[node]
        resource = self.ir.resources[attrs["resource"]]
        if resource.pool != role or attrs["stage"] != self._stage.name:
            return None
        return resource.pp_stage

    def _stage_resource(self, resource: Resource, stage: int) -> Resource:
        """``decode`` -> ``decode.pp[1]``, ``decode.ep_rank[3]`` -> ``decode.pp[1].ep_rank[3]``."""
        role = resource.pool
        name = f"{role}.pp[{stage}]{resource.name[len(role):]}"
        return self._declare(Resource(name, "gpu", role, rank=resource.rank, pp_stage=stage))

    def _send_forward(self, node: int, role: str, src: int, dst: int, micro_batch: int | None) -> int:
        """The activations of ``node`` (on stage ``src``) moved to stage ``dst`` through every
        stage between, once per node and stage; the node that holds them on ``dst``."""
        at = node
        for stage in range(src + 1, dst + 1):
            sent = self._pp_sent.get((node, stage))
            if sent is None:
                sent = self._pp_sent[(node, stage)] = self._pp_hop(role, stage, at, micro_batch)
            at = sent
        return at

    def _pp_hop(self, role: str, stage: int, after: int, micro_batch: int | None) -> int:
        """Send one micro-batch's activations from pipeline stage ``stage - 1`` to ``stage``, as
        vLLM and SGLang do: the hidden states and the residual (``IntermediateTensors``,
        ``PPProxyTensors``), each TP rank sending its 1/tp slice over its own link to its
        peer, and the next stage's TP group all-gathering them."""
        pool = self.pool(role)
        if micro_batch is None:
            if self._stage.micro_batches != 1:
                raise WorkflowError(f"{_where()}: an op of no micro-batch waits for pipeline stage {stage - 1} of pool "
                                    f"{role}: say which micro-batch's activations cross (g.scope(micro_batch=i))")
            micro_batch = 0
        tokens = Sym.var(f"{self._stage.name}.mb{micro_batch}.tokens")
        if pool.dp > 1:
            tokens = tokens.ceil_div(pool.dp)
        tensors = tokens * (2 * self.model.hidden_size * 2)  # hidden states + residual, bf16
        link = self._declare(Resource(f"link:{role}.pp[{stage - 1}]->{role}.pp[{stage}]", "link", role, dst=role,
                                      pp_stage=stage))
        saved, self._pp_forced = self._pp_forced, stage
        weights, self._weights = self._weights, None  # activations, not the layer's weights
        try:
            with self.scope(micro_batch=micro_batch):
                x = self.transfer("pp_send", link, bytes=tensors.ceil_div(pool.tp) if pool.tp > 1 else tensors,
                                  after=Op(after, self._id, self.ir.label(after)))
                if pool.tp > 1:
                    main = self._declare(Resource(role, "gpu", role))
                    x = self.collective("pp_all_gather", main, "all_gather", bytes=tensors, group=pool.tp,
                                        placement=pool.placement(pool.tp), after=x)
        finally:
            self._pp_forced, self._weights = saved, weights
        return x.node

    def finish(self) -> EventGraph:
        unused = {r.name for r in self.ir.resources.values()
                  if r.pool in self._stage_of_layer and r.pp_stage is None}
        for name in unused - {a for _, a in self.ir.graph.nodes(data="resource")}:
            del self.ir.resources[name]  # a pipelined pool runs on its stages' streams only
        for before, later, where in self._late_edges:
            self.ir.graph.add_edge(before, later, dep="order")
            if not self.ir.graph.is_acyclic():
                raise WorkflowError(f"{where}: g.depend({self.ir.label(before)}, {self.ir.label(later)}) closes a dependency cycle")
        if not self.ir.stages:
            raise WorkflowError(f"workflow {self.ir.name}: traced no stage; wrap ops in `with g.stage(...)`")
        self._check_kv_moves()
        return self.ir.validate()

    def _check_kv_moves(self) -> None:
        """Where prefill and decode run on different pools, the decode stage waits for a
        transfer into its pools (the KV of the requests it decodes); without one, KV would
        reach the decode pool for free."""
        stages = self.ir.stages.values()
        prefill_pools = {p for st in stages if st.serves == "prefill" for p in st.pools}
        for stage in stages:
            if stage.serves != "decode" or not prefill_pools or set(stage.pools) & prefill_pools:
                continue
            if not self._waits_for_transfer_into(stage):
                raise WorkflowError(
                    f"{stage.where}: stage {stage.name!r} decodes on {', '.join(stage.pools)} but "
                    f"waits for no KV transfer from the prefill pool: the KV cache would move for free. Move it with "
                    f"kv = g.transfer('kv_cache', g.link('prefill', {stage.pools[0]!r}), bytes=...) and start the "
                    "decode after it (after=kv on the stage's first op)")

    def _waits_for_transfer_into(self, stage: Stage) -> bool:
        g = self.ir.graph
        stack = self.ir.stage_nodes(stage.name)
        seen = set(stack)
        while stack:
            node = stack.pop()
            attrs = g.nodes[node]
            resource = self.ir.resources[attrs["resource"]]
            if attrs["kind"] == "transfer" and resource.dst in stage.pools and not resource.pipeline_link:
                return True
            for p in g.pred[node]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return False

