"""A simulation writes its run without pandas, networkx, numpy.ma or pyarrow.parquet, and loads fitted
predictors without pandas or pyarrow (together most of a second and 100 MB of a short run's
start-up; issue 17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


#: what a simulation must not import: pandas (~0.4 s), networkx (~0.15 s: the traced graph is
#: frontier_dag.ir.dag's), numpy.ma (np.percentile's first call; steady.linear_percentiles),
#: sklearn and numba (the forests' kernels are compiled ahead of time), pyarrow.parquet (and
#: with it pyarrow's filesystems and OpenSSL; run_dir.write_parquet)
NOT_IMPORTED = ("pandas", "networkx", "numpy.ma", "sklearn", "numba", "pyarrow.parquet")


TRACE = ROOT / "tests" / "sim" / "fixtures" / "splitwise_small.csv"


def test_simulate_writes_its_run_without_importing_pandas(tmp_path):
    """Lengths and arrivals from a CSV trace too: its reader is the csv module's."""
    out = tmp_path / "run"
    _run("import sys\nfrom frontier_dag.cli.main import cli\n"
         f"cli(['simulate', 'examples/colocated_llama3_8b.yaml', '--out', {str(out)!r}, '--no-progress', "
         "'--set', 'workload.num_requests=5', '--set', 'predictor.source=roofline', "
         f"'--set', 'workload.trace.path={TRACE}', '--set', 'workload.prompt_tokens.kind=trace', "
         "'--set', 'workload.output_tokens.kind=trace'], standalone_mode=False)\n"
         f"found = sorted(set({NOT_IMPORTED!r}) & set(sys.modules))\n"
         "assert not found, f'{found} imported'\n")
    assert (out / "requests.parquet").is_file() and (out / "summary.json").is_file()


def test_the_predictors_load_path_imports_neither_pandas_nor_pyarrow():
    _run("import sys\n"
         "import frontier_dag.predictors.registry, frontier_dag.predictors.model, frontier_dag.predictors.sources\n"
         "import frontier_dag.sim.run\n"
         "assert not {'pandas', 'pyarrow'} & set(sys.modules), sorted({'pandas', 'pyarrow'} & set(sys.modules))\n")
