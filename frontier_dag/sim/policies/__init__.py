"""Scheduling policies: how a replica forms its batches, one module per engine.

``scheduler.policy`` names a policy class. The policies of this package live one module
each, named as the policy (``vllm``, ``sglang``, ``trtllm``), imported when a config first
names them; a policy defined elsewhere registers itself with ``@register`` (its module
must be imported before the simulation). See docs/simulation.md, "Scheduling policies".
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from frontier_dag.errors import ConfigError

if TYPE_CHECKING:
    from frontier_dag.config.run import PoolConfig, SchedulerConfig
    from frontier_dag.sim.policies.base import SchedulingPolicy

#: The built-in policies, each in the module of its name.
BUILT_IN = ("vllm", "sglang", "trtllm")
POLICIES: dict[str, type[SchedulingPolicy]] = {}


def register(cls: type[SchedulingPolicy]) -> type[SchedulingPolicy]:
    """Class decorator: make ``cls`` the policy named ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute name (the value of scheduler.policy)")
    POLICIES[cls.name] = cls
    return cls


def policy_class(name: str) -> type[SchedulingPolicy]:
    """The class of policy ``name``: registered already, or in this package's module ``name``."""
    if name not in POLICIES and name.isidentifier() and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        importlib.import_module(f"{__name__}.{name}")
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(set(BUILT_IN) | set(POLICIES)))
        raise ConfigError(f"scheduler.policy: unknown policy {name!r}; known: {known} (a policy of your own "
                          "registers itself with frontier_dag.sim.policies.register)") from None


def build_policy(scheduler: SchedulerConfig, pool: PoolConfig) -> SchedulingPolicy:
    """A new policy for one replica of ``pool``, as the config's ``scheduler`` section names it."""
    return policy_class(scheduler.policy).from_config(scheduler, pool)
