"""``frontier-dag profile OP``: measure operator kernels with torch into a profile directory.

torch is imported only when a measurement starts, so ``frontier-dag profile --help``
works without it and a missing torch is reported as a clear error.
"""

from __future__ import annotations

import sys

import click

#: CLI name -> what it measures (mirrors frontier_dag.profiling.runner.OPS).
OPS = {
    "attention": "prefill, decode and mixed batches of heterogeneous sequences",
    "gemm": "dense GEMMs over M, N, K (bf16, and fp8 where the GPU has it)",
    "grouped-gemm": "MoE expert GEMMs of one EP rank under uniform and power-law routing",
    "collective": "all_reduce, all_gather, reduce_scatter, all_to_all between this machine's GPUs",
    "elementwise": "rmsnorm, silu_mul, add and rope",
}


class _Progress:
    """A status line on stderr: rewritten in place on a terminal (at most 5 times a second),
    one line every 30 s otherwise (logs of a long sweep). Picklable, so collective ranks can
    carry it into their processes."""

    def __init__(self, op: str) -> None:
        self.op = op
        self.tty = sys.stderr.isatty()
        self.shown_s = -1.0

    def __call__(self, report, budget_s: float) -> None:
        every = 0.2 if self.tty else 30.0
        if report.elapsed_s - self.shown_s < every:
            return
        self.shown_s = report.elapsed_s
        line = (f"{self.op}: {report.measured} points, {report.skipped} skipped, "
                f"{report.elapsed_s:.0f}/{budget_s:.0f} s")
        sys.stderr.write(f"\r{line}" if self.tty else f"{line}\n")
        sys.stderr.flush()


def _command(op: str, help_text: str) -> click.Command:
    @click.command(op, help=f"Measure {help_text}.")
    @click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
                  help="Where to measure; cpu measures the tiny --quick shapes only (tests, smoke runs).")
    @click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                  help="Profile directory; rows are appended to a directory this tool wrote for the same device.")
    @click.option("--quick", is_flag=True, help="Tiny shapes and few points: a smoke test in seconds.")
    @click.option("--budget-s", type=float, default=None,
                  help="Wall-time budget of the design in seconds [default: 120, or 10 with --quick].")
    @click.option("--dtype", "dtypes", multiple=True,
                  help="Compute dtype (repeatable): bf16, fp16, fp32, fp8 (gemm only) [default: bf16; "
                       "gemm on cuda also fp8].")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the design and the batches.")
    @click.option("--world-size", type=int, default=None,
                  help="collective only: number of processes [default: every GPU; 2 on the CPU].")
    def command(device, out, quick, budget_s, dtypes, seed, world_size):
        from frontier_dag.profiling.runner import profile

        run = profile(op, device=device, out=out, quick=quick, budget_s=budget_s, dtypes=dtypes, seed=seed,
                      world_size=world_size, progress=_Progress(op))
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        click.echo(f"{op} on {run.info.gpu} ({run.info.device}): {run.report.measured} points in "
                   f"{run.report.elapsed_s:.1f} s ({run.report.stopped_by}), {run.report.skipped} skipped")
        for family, count in run.rows.items():
            click.echo(f"  {family}: {count} rows, method {', '.join(run.methods[family])}")
        for note in run.notes:
            click.echo(f"  note: {note}")
        click.echo(f"wrote {', '.join(str(f) for f in run.files)}")

    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def profile() -> None:
    """Measure operator kernels with torch (on a GPU, or tiny shapes on the CPU) into a
    profile directory that `frontier-dag predictors fit --source profile-dir` reads."""


for _op, _help in OPS.items():
    profile.add_command(_command(_op, _help))
