"""The error hierarchy. Every error a user can cause descends from FrontierDagError.

Messages say what failed, where (file:line, node, config key), what was
expected, and how to fix it. The CLI prints them without a traceback.
"""

from __future__ import annotations


class FrontierDagError(Exception):
    """Base of every error frontier-dag raises on purpose."""


class ConfigError(FrontierDagError):
    """A configuration file or override is invalid."""


class WorkflowError(FrontierDagError):
    """A workflow misuses the DSL; the message names the DSL file:line."""


class GraphError(FrontierDagError):
    """An EventGraph is malformed (cycle, dangling edge, missing attribute)."""


class CostModelError(FrontierDagError):
    """A cost model cannot price an operation."""


class PredictorError(FrontierDagError):
    """Profiles cannot be read or a predictor cannot be fitted or loaded."""


class SimulationError(FrontierDagError):
    """The simulation cannot start or cannot continue."""


class RunDataError(FrontierDagError):
    """A run or sweep directory's files are missing, unreadable or from different runs."""


class DeadlockError(SimulationError):
    """The simulated cluster can never make progress again."""


class ProfilingError(FrontierDagError):
    """A kernel measurement cannot run."""


class FrontierDagWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints
    ``warning: ...``)."""
