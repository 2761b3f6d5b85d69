"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
    help="Override a config key, e.g. --set workflow.params.micro_batches=3 (repeatable).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")


def check_out_file(out: str | Path, overwrite: bool, *, also: tuple[Path, ...] = (), inputs: tuple[Path, ...] = ()) -> None:
    """Refuse to write ``out`` (and the files ``also`` written beside it) over a file that
    exists, unless ``overwrite``; and, even then, over one of the command's ``inputs`` or
    a file of a run or sweep directory that the command did not write."""
    from frontier_dag.errors import FrontierDagError
    from frontier_dag.sim.run_dir import DATA_FILES

    for path in (Path(out), *also):
        if path.is_dir():
            raise FrontierDagError(f"--out {out}: {path} is a directory; give a file name")
        resolved = path.resolve()
        for source in inputs:
            if resolved == Path(source).resolve():
                raise FrontierDagError(f"--out {out} would replace {path}, which this command reads; "
                                       "choose another file")
        parent = resolved.parent
        if (path.name in DATA_FILES and all((parent / n).is_file() for n in DATA_FILES)) or \
                (path.name in ("sweep.yaml", "results.parquet") and (parent / "points").is_dir()):
            raise FrontierDagError(f"--out {out} would replace {path.name} of the {'run' if path.name in DATA_FILES else 'sweep'} "
                                   f"in {path.parent}; choose another file")
        if path.exists() and not overwrite:
            raise FrontierDagError(f"--out {out}: {path} exists; choose another file or pass --overwrite to replace it")
