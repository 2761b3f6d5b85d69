"""Where new requests enter: the pools a request may enter and the rule that picks one.

A strategy with more than one pool that prefills (a decode pool that also prefills short
prompts beside a prefill pool: Splitwise's mixed pool, DistServe's local prefill) says
which pools take new requests and how one is chosen, in its workflow:

    g.entry(pools=["decode", "prefill"], rule="by_prompt_length", params={"threshold": 1024})

``rule`` is a built-in's name (``BUILTIN_RULES``) with its ``params``, or your own callable
``rule(request, pools) -> pool``: ``request`` says what the router knows of the request
(``prompt_tokens``, ...) and ``pools`` are the entry pools' states in the order declared
(``queued``, ``running``, ``kv_free_tokens``, ``outstanding_tokens``, ...); both are
documented in ``frontier_dag.sim.routing``. It returns one of ``pools``. A function is
called as ``rule(request, pools, **params)``; a class is made once per simulation,
``rule(**params)``, and then called, so it may keep state (round robin does).

The config's ``cluster.entry`` overrides what the workflow declares (``resolve_entry``).
Which replica of the chosen pool takes the request is ``scheduler.routing``'s choice.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from frontier_dag.config.run import Deployment
from frontier_dag.errors import ConfigError, WorkflowError
from frontier_dag.ir.graph import EventGraph

#: What a stage that a request may enter serves: it computes prompts.
PREFILLS = ("prefill", "both")


@dataclass(frozen=True)
class Entry:
    """The pools (by role, in the order a rule sees them) that new requests may enter, the
    rule that picks one and its parameters, and who said so (``where``: the ``g.entry``
    file:line, or the config key)."""

    pools: tuple[str, ...]
    rule: str | Callable[..., Any]
    params: dict[str, Any] = field(default_factory=dict)
    where: str = ""

    def describe(self) -> str:
        """The rule as summaries and drawings name it: ``by_prompt_length(threshold=1024, ...)``."""
        name = self.rule if isinstance(self.rule, str) else getattr(self.rule, "__qualname__", repr(self.rule))
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{name}({args})"

    def make(self) -> Callable[[Any, list], Any]:
        """The rule, ready for one simulation (a class or a built-in made afresh)."""
        rule = BUILTIN_RULES.get(self.rule, self.rule) if isinstance(self.rule, str) else self.rule
        if inspect.isclass(rule):
            return rule(**self.params)
        return functools.partial(rule, **self.params) if self.params else rule


# -- the built-in rules ------------------------------------------------------------------------
class RoundRobin:
    """Each new request enters the next pool, in the order declared."""

    name: ClassVar[str] = "round_robin"
    PARAMS: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self._next = 0

    def __call__(self, request, pools: list):
        pool = pools[self._next % len(pools)]
        self._next += 1
        return pool

    @classmethod
    def check(cls, params: dict[str, Any], serves: dict[str, str]) -> dict[str, Any]:
        return params

    @classmethod
    def idle(cls, params: dict[str, Any], prompts: tuple[int, float]) -> list[str]:
        return []


class LeastOutstandingTokens(RoundRobin):
    """The pool with the fewest outstanding tokens per replica (the prompt and output tokens of
    the requests it holds; ``PoolState.outstanding_tokens``); the first declared on a tie."""

    name: ClassVar[str] = "least_outstanding_tokens"

    def __call__(self, request, pools: list):
        return min(pools, key=lambda p: p.outstanding_tokens / p.replicas)


class ByPromptLength(RoundRobin):
    """Prompts of fewer than ``threshold`` tokens enter ``short``, the others ``long``.
    Defaults: ``short`` the entry pool that also decodes (it prefills them locally),
    ``long`` the one that only prefills (DistServe's and Splitwise's split)."""

    name: ClassVar[str] = "by_prompt_length"
    PARAMS: ClassVar[dict[str, str]] = {
        "threshold": "prompt tokens from which a request enters the long pool (a whole number >= 1; required)",
        "short": "the role of the pool short prompts enter (default: the entry pool that also decodes)",
        "long": "the role of the pool long prompts enter (default: the entry pool that only prefills)",
    }

    def __init__(self, threshold: int, short: str, long: str) -> None:
        self.threshold, self.short, self.long = threshold, short, long

    def __call__(self, request, pools: list):
        role = self.short if request.prompt_tokens < self.threshold else self.long
        return next(p for p in pools if p.role == role)

    @classmethod
    def check(cls, params: dict[str, Any], serves: dict[str, str]) -> dict[str, Any]:
        threshold = params.get("threshold")
        if threshold is None:
            raise ValueError("needs threshold (prompt tokens from which a request enters the long pool)")
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError(f"threshold={threshold!r} must be a whole number of prompt tokens >= 1")
        out = {"threshold": threshold}
        for key, wanted in (("short", "both"), ("long", "prefill")):
            role = params.get(key)
            if role is None:
                fitting = [r for r, s in serves.items() if s == wanted]
                if len(fitting) != 1:
                    raise ValueError(f"give {key}=<a role of {', '.join(serves)}>: no single entry pool "
                                     f"{'also decodes' if wanted == 'both' else 'only prefills'}")
                role = fitting[0]
            elif role not in serves:
                raise ValueError(f"{key}={role!r} is not one of the entry pools ({', '.join(serves)})")
            out[key] = role
        if out["short"] == out["long"]:
            raise ValueError(f"short and long are both {out['short']!r}: the other entry pool would never receive "
                             "a request")
        others = [r for r in serves if r not in (out["short"], out["long"])]
        if others:
            raise ValueError(f"it sends requests to short and long only: {others[0]!r} would never receive one")
        return out

    @classmethod
    def idle(cls, params: dict[str, Any], prompts: tuple[int, float]) -> list[str]:
        """The pools no prompt of lengths in ``prompts`` (the workload's bounds) can enter."""
        low, high = prompts
        return [params["long"]] if high < params["threshold"] else [params["short"]] if low >= params["threshold"] else []


#: The rules ``g.entry(rule=...)`` and ``cluster.entry.rule`` name.
BUILTIN_RULES: dict[str, type[RoundRobin]] = {r.name: r for r in (RoundRobin, LeastOutstandingTokens, ByPromptLength)}


def check_rule(rule: Any, params: Any) -> None:
    """``rule`` is a built-in's name or a callable, ``params`` a mapping of a built-in's known
    parameters; raises ValueError saying what is wrong."""
    if not isinstance(params, dict):
        raise ValueError(f"params={params!r} must be a mapping of parameter names to values")
    if isinstance(rule, str):
        if rule not in BUILTIN_RULES:
            raise ValueError(f"rule={rule!r} is not a built-in rule; built-in rules are {', '.join(BUILTIN_RULES)} "
                             "(or pass a callable rule(request, pools) -> pool)")
        unknown = sorted(set(params) - set(BUILTIN_RULES[rule].PARAMS))
        if unknown:
            takes = ", ".join(BUILTIN_RULES[rule].PARAMS) or "no parameters"
            raise ValueError(f"rule {rule!r} has no parameter {unknown[0]!r}; it takes {takes}")
    elif not callable(rule):
        raise ValueError(f"rule={rule!r} must be the name of a built-in rule ({', '.join(BUILTIN_RULES)}) or a "
                         "callable rule(request, pools) -> pool")


# -- the entry a run uses ----------------------------------------------------------------------
def resolve_entry(graph: EventGraph, deployment: Deployment) -> Entry:
    """The entry of a traced strategy: what the workflow declared (``graph.entry``) with the
    config's ``cluster.entry`` over it, or, declared nowhere, the one pool that prefills.
    Checks, before anything is simulated, that every pool can receive work: a pool that
    only prefills must be an entry, a pool that decodes must be an entry or receive the
    prefill pool's KV."""
    declared: Entry | None = graph.entry
    config = deployment.config.cluster.entry
    src = deployment.origin.name
    role_of = {name: pool.role for name, pool in deployment.pools.items()}
    name_of = {role: name for name, role in role_of.items()}
    stages = [s for s in graph.stages.values() if s.serves != "transfer"]
    serving = {s.pools[0]: s for s in stages}
    entry = declared
    if config is not None:
        pools = tuple(role_of[n] for n in config.pools) if config.pools is not None else None
        rule = config.rule
        if rule is not None:
            try:
                check_rule(rule, config.params)
            except ValueError as exc:
                raise ConfigError(f"{src}: cluster.entry: {exc}") from None
        if pools is None and declared is None:
            raise ConfigError(f"{src}: cluster.entry: the workflow declares no entry, so name its pools "
                              f"(cluster.entry.pools: [{', '.join(name_of[r] for r in serving)}])")
        same_rule = rule is None or (declared is not None and rule == declared.rule)
        params = {**(declared.params if declared is not None and same_rule else {}), **config.params}
        if rule is None and declared is None:
            rule = "round_robin"
        entry = Entry(pools if pools is not None else declared.pools, rule if rule is not None else declared.rule,
                      params, f"{src}: cluster.entry")
    if entry is None:
        prefilling = [s for s in stages if s.serves in PREFILLS]
        if len(prefilling) > 1:
            names = ", ".join(f"{name_of[s.pools[0]]} (stage {s.name}, serves {s.serves})" for s in prefilling)
            roles = ", ".join(repr(s.pools[0]) for s in prefilling)
            raise WorkflowError(f"{prefilling[-1].where}: pools {names} can all prefill new requests, but the workflow "
                                "says neither which of them requests enter nor how one is chosen, so all but one would "
                                f"never receive work. Declare it: g.entry(pools=[{roles}], rule='by_prompt_length', "
                                "params={'threshold': 1024}) (docs/dsl.md, Routing between entry pools), or set "
                                "cluster.entry in the config")
        if not prefilling:
            raise WorkflowError(f"workflow {graph.name}: no stage serves prefill; nothing can take new requests")
        return Entry((prefilling[0].pools[0],), "round_robin", {}, "")
    return _checked(entry, graph, deployment, serving, name_of)


def _checked(entry: Entry, graph: EventGraph, deployment: Deployment, serving: dict, name_of: dict) -> Entry:
    """``entry`` with a built-in's parameters filled in, after checking that each pool can take
    new requests and that every pool can receive work."""
    config_said = entry.where.endswith("cluster.entry")

    def fail(message: str) -> Exception:
        return ConfigError(f"{entry.where}: {message}") if config_said else WorkflowError(f"{entry.where}: g.entry: {message}")

    pools_key = "cluster.entry.pools" if config_said else "pools="
    steps_with = {m: s for s in serving.values() for m in s.pools[1:]}
    for role in entry.pools:
        if role in steps_with:
            lead = steps_with[role].pools[0]
            raise fail(f"{pools_key} names {name_of[role]}, which steps with {name_of[lead]} in stage "
                       f"{steps_with[role].name!r}; name {name_of[lead]} (requests enter the stage's first pool)")
        stage = serving.get(role)
        if stage is None:
            raise fail(f"{pools_key} names {name_of[role]}, whose role {role!r} runs no stage of workflow {graph.name}")
        if stage.serves not in PREFILLS:
            raise fail(f"{pools_key} names {name_of[role]}, whose stage {stage.name!r} serves {stage.serves} only: a "
                       "request entering it would never be prefilled. Name pools whose stage serves prefill or both")
    if len(set(entry.pools)) != len(entry.pools) or not entry.pools:
        raise fail(f"{pools_key} must name each entry pool once, and at least one")
    serves = {role: serving[role].serves for role in entry.pools}
    params = entry.params
    try:
        check_rule(entry.rule, entry.params)
        if isinstance(entry.rule, str):
            params = BUILTIN_RULES[entry.rule].check(entry.params, serves)
    except ValueError as exc:
        raise fail(f"rule {entry.rule!r}: {exc}" if isinstance(entry.rule, str) else str(exc)) from None
    entry = Entry(entry.pools, entry.rule, params, entry.where)
    # every pool receives work: an entry, or the pool the prefill pool's KV moves to
    hands_off = any(s == "prefill" for s in serves.values())
    decoders = [r for r, s in serving.items() if s.serves != "prefill"]
    for role, stage in serving.items():
        if role in entry.pools or (hands_off and stage.serves != "prefill" and len(decoders) == 1):
            continue
        why = ("it only prefills, and requests do not enter it" if stage.serves == "prefill" else
               "requests do not enter it and no prefill pool hands it KV")
        raise fail(f"pool {name_of[role]} (stage {stage.name!r}, serves {stage.serves}) can never receive work: {why}. "
                   f"Add {name_of[role]} to {pools_key}" + ("" if config_said else f" (role {role!r})"))
    if isinstance(entry.rule, str):
        idle = BUILTIN_RULES[entry.rule].idle(params, prompt_bounds(deployment))
        for role in idle:
            wl = deployment.config.workload.prompt_tokens
            raise fail(f"pool {name_of[role]} can never receive work: {entry.describe()} sends no prompt of "
                       f"workload.prompt_tokens ({wl.kind}, {_bounds_text(prompt_bounds(deployment))} tokens) to it. "
                       "Move the threshold within the prompts' lengths (cluster.entry.params.threshold sets it over the "
                       "workflow's), or drop the pool")
    return entry


def prompt_bounds(deployment: Deployment) -> tuple[int, float]:
    """The shortest and longest prompt the workload's config allows (1 and infinity where
    it does not bound them: lognormal or trace lengths without ``low``/``high``)."""
    length = deployment.config.workload.prompt_tokens
    if length.kind == "fixed":
        return length.value, length.value
    return length.low or 1, length.high if length.high is not None else float("inf")


def _bounds_text(bounds: tuple[int, float]) -> str:
    low, high = bounds
    return f"{low:,}" if low == high else f"{low:,} to {high:,}" if high != float("inf") else f"from {low:,}"
