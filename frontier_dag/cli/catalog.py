"""``frontier-dag systems`` and ``frontier-dag models``: what can be simulated."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from frontier_dag.cli.options import json_option


def _preset_of(system: str) -> tuple[str | None, str | None]:
    """(hardware preset, GPU name) of an aiconfigurator system."""
    from frontier_dag.config.hardware import hardware_names, load_hardware

    for name in hardware_names():
        hw = load_hardware(name)
        if hw.aiconfigurator_system == system:
            return name, hw.gpu.name
    return None, None


def _by_table(families: dict[str, str]) -> str:
    """``owner version: family family; ...`` from family -> table paths."""
    groups: dict[str, dict[str, None]] = {}
    for family, tables in families.items():
        for table in tables.split(" + "):
            kind, owner, version = table.split("/")[:3]
            groups.setdefault(f"{owner} {version}", {})[family] = None
    return "; ".join(f"{source}: {' '.join(names)}" for source, names in groups.items())


@click.command()
@json_option
def systems(as_json) -> None:
    """Every GPU system of aiconfigurator-core's kernel tables: its engines and their versions,
    the operator families read for each engine (and from which version), the wide-EP
    tables, and the hardware preset that describes the GPU."""
    from frontier_dag.predictors.catalog import catalog

    entries = []
    for system in catalog():
        preset, gpu = _preset_of(system.name)
        entries.append({**asdict(system), "hardware": preset, "gpu": gpu, "has_tables": system.has_tables})
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    with_tables = sum(e["has_tables"] for e in entries)
    click.echo(f"{len(entries)} systems in aiconfigurator-core, {with_tables} with kernel tables "
               "(use the name as --system, or as hardware: in a config)")
    for e in entries:
        head = f"{e['name']}  {e['gpu'] or '?'}  (hardware: {e['hardware'] or 'none'})"
        if not e["has_tables"]:
            click.echo(f"\n{head}: no kernel tables in this aiconfigurator-core; the roofline prices it")
            continue
        click.echo(f"\n{head}  collectives: {', '.join(e['collectives'])}")
        for engine in e["engines"]:
            click.echo(f"  {engine['engine']:<7} versions {' '.join(engine['versions'])}")
            click.echo(f"          reads {_by_table(engine['families'])}")
            if engine["wide_ep"]:
                click.echo(f"          wide-EP {', '.join(engine['wide_ep'])}")


def _summary(model) -> dict:
    counts = model.parameter_count()
    attention = (f"MLA {model.num_heads} heads" if model.mla is not None
                 else f"GQA {model.num_heads}/{model.num_kv_heads}")
    experts = f"{model.moe.num_experts} experts top-{model.moe.top_k}" if model.moe is not None else "dense"
    precision = model.dtype if (model.moe_dtype or model.dtype) == model.dtype else f"{model.dtype}/{model.moe_dtype}"
    return {"params_b": sum(counts.values()) / 1e9, "layers": model.num_layers, "attention": attention,
            "experts": experts, "precision": precision}


@click.command()
@json_option
def models(as_json) -> None:
    """The model presets, and the Hugging Face ids whose config.json ships with
    aiconfigurator-core (``model: Qwen/Qwen3-8B`` in a config), with their architecture."""
    from frontier_dag.config.model import (
        aiconfigurator_model_ids,
        load_model,
        model_aliases,
        model_names,
        unmodelled_reason,
    )
    from frontier_dag.errors import FrontierDagError

    presets = [{"name": name, "aliases": model_aliases(name), **_summary(load_model(name))} for name in model_names()]
    shipped = []
    for model_id in aiconfigurator_model_ids():
        reason = unmodelled_reason(model_id)
        try:
            if reason:
                raise FrontierDagError(reason)
            shipped.append({"id": model_id, "loads": True, "reason": "", **_summary(load_model(model_id))})
        except FrontierDagError as exc:
            shipped.append({"id": model_id, "loads": False, "reason": str(exc)})
    if as_json:
        click.echo(json.dumps({"presets": presets, "aiconfigurator": shipped}, indent=2))
        return
    line = "{name:<34} {params:>8} {layers:>6}  {attention:<14} {experts:<20} {precision}"
    header = line.format(name="name", params="params", layers="layers", attention="attention",
                         experts="experts", precision="precision")

    def row(name: str, m: dict) -> str:
        return line.format(name=name, params=f"{m['params_b']:.1f}B", layers=m["layers"], attention=m["attention"],
                           experts=m["experts"], precision=m["precision"])

    click.echo(f"presets ({len(presets)}):")
    click.echo(header)
    for m in presets:
        click.echo(row(m["name"], m) + (f"  (also {', '.join(m['aliases'])})" if m["aliases"] else ""))
    click.echo(f"\nHugging Face ids whose config.json ships with aiconfigurator-core ({len(shipped)}):")
    click.echo(header)
    for m in shipped:
        click.echo(row(m["id"], m) if m["loads"] else f"{m['id']:<34} not simulated: {m['reason']}")
