"""The built-in serving strategies, one DSL file each. Importing this package registers them.

They are the model to copy when authoring a new strategy (see docs/dsl.md).
"""

from frontier_dag.workflows import (  # noqa: F401
    af_ep_moe,
    af_pingpong,
    colocated,
    ep_moe,
    hybrid_pd,
    pd,
    pd_ep_moe,
)
