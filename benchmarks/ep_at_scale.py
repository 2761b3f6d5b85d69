"""The worked example of docs/ep-at-scale.md: DeepSeek-V3 with a 32-GPU prefill pool and a
64-256-GPU decode pool, on H100 and H200, with and without two-batch overlap (TBO) and
multi-token prediction (MTP). Per decode batch it prices one iteration (the critical path
of its DAG, ``frontier-dag critical-path --batch-size B --context C``) and writes:

* ``OUT/ep_at_scale.svg`` and ``.png``: decode tokens/s per GPU and TPOT against
  sequences per GPU;
* ``OUT/ep_at_scale.json``: every point (step time, TPOT, tokens/s per GPU, the decode
  stage's critical-path attribution), the prefill pool's tokens/s per GPU, and which
  predictor priced them; ``OUT/ep_at_scale.md``: the doc's table of them.

    python benchmarks/ep_at_scale.py --out docs/img            # the figures of the doc
    python benchmarks/ep_at_scale.py --from-json docs/img      # redraw and retable only
    python benchmarks/ep_at_scale.py --quick --out /some/dir   # one GPU, one pool size

The figures rest on the predictor the config names (aiconfigurator's SGLang tables by
default): rerun this command when the pricing of the MoE layers changes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "pd_ep_moe_deepseek_v3.yaml"

HARDWARE = ("h100_sxm", "h200_sxm")
DECODE_GPUS = (64, 128, 256)
SEQS_PER_GPU = (16, 32, 64, 128, 256)
CONTEXT = 2100  # cached tokens of a decoding sequence: a 2,000-token prompt and half of 200 outputs
PREFILL_TOKENS_PER_GPU = 16384  # one prefill batch: 8 prompts of 2,048 tokens on every GPU
#: DeepSeek-V3's technical report: the second token's acceptance is 85-90% (the low end here)
MTP = {"draft_tokens": 1, "acceptance": 0.85}
VARIANTS = {
    "plain": {},
    "TBO": {"workflow.params.micro_batches": 2},
    "MTP": {"workflow.params.mtp": MTP},
    "TBO + MTP": {"workflow.params.micro_batches": 2, "workflow.params.mtp": MTP},
}


def overrides(hardware: str, decode_gpus: int, variant: str) -> dict:
    return {
        "hardware": hardware,
        "cluster.pools.prefill": {"role": "prefill", "gpus": 32, "tp": 1, "ep": 32},
        "cluster.pools.decode": {"role": "decode", "gpus": decode_gpus, "tp": 1, "ep": decode_gpus},
        # one redundant expert per decode rank (EPLB): 256 + 64 over EP 64, 256 + 256 over EP 256
        "workflow.params.routing": {"kind": "power_law", "alpha": 1.2, "redundant_experts": decode_gpus},
        "workload.prompt_tokens": {"kind": "fixed", "value": 2048},
        "scheduler.max_num_batched_tokens": PREFILL_TOKENS_PER_GPU * 32,
        **VARIANTS[variant],
    }


def measure(hardware: str, decode_gpus: int, variant: str, seqs_per_gpu) -> dict:
    from frontier_dag.analysis.iteration import analyze_iteration, representative_loads
    from frontier_dag.api import assemble

    built = assemble(CONFIG, overrides(hardware, decode_gpus, variant))
    emitted = built.graph.stages["decode"].tokens_per_step
    points = []
    for seqs in seqs_per_gpu:
        loads = representative_loads(built.graph, built.deployment, seqs * decode_gpus, CONTEXT)
        report = analyze_iteration(built.graph, built.deployment, built.cost_model, loads)
        step_us = report.stage_times_us["decode"]
        points.append({
            "seqs_per_gpu": seqs, "step_ms": step_us / 1000, "tpot_ms": step_us / 1000 / emitted,
            "tokens_per_s_per_gpu": seqs * emitted / (step_us * 1e-6),
            "attribution": decode_attribution(built.graph, report),
            "out_of_range": decode_out_of_range(built, loads),
        })
    prefill_us = report.stage_times_us["prefill"]
    return {"hardware": hardware, "decode_gpus": decode_gpus, "variant": variant, "tokens_per_step": emitted,
            "prefill_tokens_per_s_per_gpu": PREFILL_TOKENS_PER_GPU / (prefill_us * 1e-6),
            "prefill_step_ms": prefill_us / 1000, "points": points,
            "predictor": built.deployment.config.predictor.model_dump(exclude_none=True)}


def decode_out_of_range(built, loads) -> dict[str, float]:
    """Per operator family, the share of the decode stage's prices that came from outside the
    data their predictor was fitted on (the summary's ``predictor_out_of_range``)."""
    from frontier_dag.analysis.iteration import stage_env
    from frontier_dag.cost.coster import StageCoster
    from frontier_dag.ir.compile import CompiledStage

    coster = StageCoster(built.graph, CompiledStage(built.graph, "decode"), built.cost_model)
    coster.costs(*stage_env("decode", loads["decode"]))
    used = coster.usage.by_family()
    return {f: round(n / used[f], 3) for f, n in sorted(coster.usage.out_of_range_by.items()) if n and used.get(f)}


def decode_attribution(graph, report) -> dict[str, float]:
    """Shares of the decode stage's stretch of the iteration's critical path, by category."""
    from frontier_dag.cost.queries import CATEGORY_OF_FAMILY

    nodes = report.compiled.nodes.tolist()
    shares: dict[str, float] = {}
    for position in report.path_positions:
        attrs = graph.graph.nodes[nodes[position]]
        if attrs["stage"] != "decode":
            continue
        category = CATEGORY_OF_FAMILY.get(graph.templates[attrs["template"]].family, "waits_and_bubbles")
        shares[category] = shares.get(category, 0.0) + float(report.duration_us[position])
    total = sum(shares.values())
    return {k: round(v / total, 4) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])} if total else {}


def draw(results: list[dict], out: Path) -> list[Path]:
    from frontier_dag.render.plots import pyplot

    plt = pyplot()
    hardware = sorted({r["hardware"] for r in results})
    fig, axes = plt.subplots(2, len(hardware), figsize=(6.5 * len(hardware), 8.5), squeeze=False, sharex=True)
    styles = {"plain": "-", "TBO": "--", "MTP": "-.", "TBO + MTP": ":"}
    colors = dict(zip(sorted({r["decode_gpus"] for r in results}), ("#1f77b4", "#ff7f0e", "#2ca02c"), strict=False))
    for col, hw in enumerate(hardware):
        for r in (r for r in results if r["hardware"] == hw):
            x = [p["seqs_per_gpu"] for p in r["points"]]
            label = f"{r['decode_gpus']} GPUs, {r['variant']}"
            style = {"linestyle": styles[r["variant"]], "color": colors[r["decode_gpus"]], "marker": "o",
                     "markersize": 3}
            axes[0][col].plot(x, [p["tokens_per_s_per_gpu"] for p in r["points"]], label=label, **style)
            axes[1][col].plot(x, [p["tpot_ms"] for p in r["points"]], label=label, **style)
            # hollow rings: most expert GEMMs priced outside the profiled token counts
            outside = [p for p in r["points"] if p.get("out_of_range", {}).get("moe_grouped_gemm", 0) > 0.5]
            for row, key in ((0, "tokens_per_s_per_gpu"), (1, "tpot_ms")):
                axes[row][col].scatter([p["seqs_per_gpu"] for p in outside], [p[key] for p in outside], s=60,
                                       facecolors="none", edgecolors=colors[r["decode_gpus"]], linewidths=1)
        axes[0][col].set_title(f"DeepSeek-V3 decode, {hw}")
        axes[0][col].set_ylabel("decode tokens/s per GPU")
        axes[1][col].set_ylabel("TPOT (ms)")
        axes[1][col].set_xlabel("sequences per decode GPU")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    source = results[0]["predictor"]
    fig.suptitle(f"priced by {source.get('source')} ({source.get('backend', '')}); context {CONTEXT} tokens, "
                 f"power-law routing 1.2, MTP 1 draft token at {MTP['acceptance']:.0%} acceptance; rings: most "
                 "expert GEMMs priced outside the profiled token counts", fontsize=9)
    fig.tight_layout()
    written = []
    for fmt in ("svg", "png"):
        path = out / f"ep_at_scale.{fmt}"
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)
    return written


def table(results: list[dict]) -> str:
    """The doc's table: step time and decode tokens/s per GPU at 64, 128 and 256 sequences
    per GPU, the prefill pool's tokens/s per GPU, the decode critical path's top categories."""
    lines = ["| GPU | decode GPUs | variant | 64/GPU: step, tok/s/GPU | 128/GPU | 256/GPU | prefill tok/s/GPU | "
             "decode critical path at 128/GPU | priced outside the profiles at 128/GPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        at = {p["seqs_per_gpu"]: p for p in r["points"]}
        cells = [f"{at[s]['step_ms']:.0f} ms, {at[s]['tokens_per_s_per_gpu']:,.0f}" for s in (64, 128, 256)]
        top = ", ".join(f"{k} {v:.0%}" for k, v in list(at[128]["attribution"].items())[:3])
        outside = ", ".join(f"{k} {v:.0%}" for k, v in at[128].get("out_of_range", {}).items()) or "none"
        lines.append(f"| {r['hardware']} | {r['decode_gpus']} | {r['variant']} | {' | '.join(cells)} | "
                     f"{r['prefill_tokens_per_s_per_gpu']:,.0f} | {top} | {outside} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for ep_at_scale.{svg,png,json}")
    parser.add_argument("--quick", action="store_true", help="H200 and 64 decode GPUs only")
    parser.add_argument("--from-json", action="store_true", help="redraw and retable OUT/ep_at_scale.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        results = json.loads((args.out / "ep_at_scale.json").read_text())
        (args.out / "ep_at_scale.md").write_text(table(results))
        for path in draw(results, args.out):
            print(f"wrote {path}")
        return
    hardware, pools = (HARDWARE[1:], DECODE_GPUS[:1]) if args.quick else (HARDWARE, DECODE_GPUS)
    results = []
    for hw in hardware:
        for gpus in pools:
            for variant in VARIANTS:
                start = time.perf_counter()
                results.append(measure(hw, gpus, variant, SEQS_PER_GPU))
                r = results[-1]
                at = {p["seqs_per_gpu"]: p for p in r["points"]}
                print(f"{hw} decode {gpus:>3} GPUs {variant:<9}: " + ", ".join(
                    f"{s}/GPU {at[s]['step_ms']:.1f} ms {at[s]['tokens_per_s_per_gpu']:,.0f} tok/s" for s in (64, 128, 256))
                    + f"; prefill {r['prefill_tokens_per_s_per_gpu']:,.0f} tok/s/GPU [{time.perf_counter() - start:.0f} s]",
                    flush=True)
    (args.out / "ep_at_scale.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "ep_at_scale.md").write_text(table(results))
    for path in draw(results, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
