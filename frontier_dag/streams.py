"""Named random streams: every concern that draws random numbers has a generator of its own.

``stream(seed, "arrivals")`` is ``np.random.default_rng([seed, STREAMS["arrivals"]])``: a
run is reproducible bit for bit from its seed, and a change to how one concern draws (the
output-length model, the routing) moves nothing else. Extra integers key a concern's
sub-streams (a rebuilt iteration's routing by its row). Never renumber a stream: every
seeded result would change.

>>> stream(0, "arrivals").integers(0, 100, 3).tolist() == np.random.default_rng([0, 0]).integers(0, 100, 3).tolist()
True
"""

from __future__ import annotations

import numpy as np

from frontier_dag.errors import ConfigError

STREAMS = {
    "arrivals": 0,            # arrival times (Poisson, gamma, ...)
    "prompt_lengths": 1,
    "output_lengths": 2,
    "trace_rows": 3,          # which trace rows a workload samples
    "client_ramp": 7919,      # closed-loop clients' first sends within workload.ramp_s
    "prompt_pool": 7933,
    "turnaround": 7937,       # closed-loop clients' random turnaround (workload.turnaround_s)      # the order a workload.prompt_pool dataset's prompts are sent in
    "expert_popularity": 7927,  # each MoE layer's expert popularity (power-law routing)
    "expert_routing": 104729,   # each iteration's routed tokens per expert
    "representative_batch": 15485863,  # the batch one iteration of a config is priced for
    "rebuilt_routing": 32452843,       # routing of a logged iteration rebuilt as its DAG
}


def stream(seed: int, name: str, *keys: int) -> np.random.Generator:
    """The generator of concern ``name`` (a key of ``STREAMS``) for ``seed``."""
    if seed < 0:
        raise ConfigError(f"seed={seed}: a seed must be an integer >= 0")
    return np.random.default_rng([seed, STREAMS[name], *keys])
