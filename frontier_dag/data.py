"""Where public profile and trace data live outside the project.

The data of other projects (Frontier's and Vidur's profiles, traces, the
aiconfigurator sample) is not ours to commit. Set ``FRONTIER_DAG_DATA`` to the
folder that holds ``aiconfigurator/``, ``frontier/`` and ``vidur/``; without it,
``../shared/data`` next to the repository is used when it exists.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FRONTIER_DAG_DATA"


def shared_data_dir() -> Path | None:
    """The public data folder, or None when there is none."""
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
        return path if path.is_dir() else None
    repo = Path(__file__).resolve().parent.parent
    candidate = repo.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def expand_data_path(text: str | os.PathLike, base_dir: Path | None = None) -> Path:
    """Expand ``${FRONTIER_DAG_DATA}`` (and ``~``) in a path; relative paths are taken
    from ``base_dir`` (the config file's folder) when given."""
    text = str(text)
    if "${" + ENV_VAR + "}" in text or "$" + ENV_VAR in text:
        root = shared_data_dir()
        if root is None:
            from frontier_dag.errors import ConfigError

            raise ConfigError(
                f"{text}: {ENV_VAR} is not set and ../shared/data does not exist; "
                f"set {ENV_VAR} to the folder with the public traces and profiles"
            )
        text = text.replace("${" + ENV_VAR + "}", str(root)).replace("$" + ENV_VAR, str(root))
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    return path
