"""Sweep files: axes as lists and ranges, choices over whole sub-configs, expressions tying
axes, constraints, duplicates, and errors that name the key."""

from __future__ import annotations

import pytest

from frontier_dag.errors import ConfigError
from frontier_dag.sweep import expand, sweep_from_dict
from frontier_dag.sweep.spec import EarlyStopConfig, axis_values

BASE = {
    "model": "qwen3-30b-a3b", "hardware": "h200_sxm",
    "cluster": {"pools": {"main": {"role": "colocated", "gpus": 8, "ep": 8}}},
    "workflow": {"name": "ep_moe"}, "predictor": {"source": "roofline"},
    "workload": {"clients": 8, "num_requests": 100},
}


def points(axes, **extra):
    return expand(sweep_from_dict({"base": BASE, "axes": axes, **extra}, source="s.yaml"))


@pytest.mark.parametrize(("spec", "values"), [
    ([1, 2, 5], [1, 2, 5]),
    (3, [3]),
    ({"values": ["a", "b"]}, ["a", "b"]),
    ({"from": 8, "to": 32, "step": 8}, [8, 16, 24, 32]),
    ({"from": 8, "to": 30, "step": 8}, [8, 16, 24]),
    ({"from": 4, "to": 64, "factor": 2}, [4, 8, 16, 32, 64]),
    ({"from": 0.5, "to": 1.0, "step": 0.25}, [0.5, 0.75, 1.0]),
])
def test_axis_values(spec, values):
    assert axis_values(spec, "axes.x") == values


@pytest.mark.parametrize("spec", [[], {"from": 1}, {"from": 1, "to": 4, "step": 0}, {"from": 0, "to": 4, "factor": 2},
                                  {"start": 1, "stop": 3}])
def test_bad_axis_values_name_the_axis(spec):
    with pytest.raises(ConfigError, match="axes.x"):
        axis_values(spec, "axes.x")


def test_key_path_axes_make_the_grid_and_set_the_keys():
    out = points({"workload.clients": [4, 16], "scheduler.max_num_seqs": {"from": 64, "to": 128, "step": 64}})
    assert out.grid == 4 and len(out.points) == 4
    got = {(p.config["workload"]["clients"], p.config["scheduler"]["max_num_seqs"]) for p in out.points}
    assert got == {(4, 64), (4, 128), (16, 64), (16, 128)}
    assert out.points[0].axes == {"workload.clients": 4, "scheduler.max_num_seqs": 64}
    assert len({p.id for p in out.points}) == 4


def test_choices_replace_whole_sub_configs_and_expressions_tie_axes():
    out = points({
        "budget": [16, 32],
        "strategy": {"choices": {
            "colocated": {"cluster.pools": {"main": {"role": "colocated", "gpus": "=budget", "ep": 8,
                                                      "replicas": "=budget // 8"}}},
            "pd": {"set": {"cluster.pools": {"prefill": {"role": "prefill", "gpus": "=prefill_gpus"},
                                              "decode": {"role": "decode", "gpus": "=budget - prefill_gpus"}},
                           "workflow": {"name": "pd"}},
                   "constraints": ["prefill_gpus < budget"]},
        }},
        "prefill_gpus": [8, 16],
    }, constraints=["total_gpus <= 32"])
    # colocated ignores prefill_gpus: its two values give one point each (the second is a duplicate);
    # pd with budget 16 and 16 prefill GPUs breaks its own constraint
    assert out.grid == 8 and out.duplicates == 2 and out.excluded == 1
    by = {(p.strategy, p.axes["budget"], p.axes["prefill_gpus"]): p.config for p in out.points}
    assert set(by) == {("colocated", 16, None), ("colocated", 32, None), ("pd", 16, 8), ("pd", 32, 8), ("pd", 32, 16)}
    pd = by[("pd", 32, 8)]
    assert pd["cluster"]["pools"] == {"prefill": {"role": "prefill", "gpus": 8}, "decode": {"role": "decode", "gpus": 24}}
    assert pd["workflow"] == {"name": "pd"}
    assert by[("colocated", 32, None)]["cluster"]["pools"]["main"]["replicas"] == 4
    assert by[("colocated", 32, None)]["workflow"] == {"name": "ep_moe"}  # the base's, untouched


def test_set_reads_the_points_config_and_functions():
    out = points({"workload.clients": [8, 64]}, set={"workload.num_requests": "=max(100, 4 * workload.clients)"})
    assert [p.config["workload"]["num_requests"] for p in out.points] == [100, 256]


def test_constraints_see_total_gpus():
    out = points({"cluster.pools.main.gpus": [8, 16, 32]}, constraints=["total_gpus <= 16"])
    assert [p.config["cluster"]["pools"]["main"]["gpus"] for p in out.points] == [8, 16] and out.excluded == 1


@pytest.mark.parametrize(("axes", "extra", "match"), [
    ({"x": ["=nope + 1"]}, {"set": {"seed": "=nope"}}, "unknown name 'nope'"),
    ({"x": [1]}, {"set": {"seed": "=__import__('os')"}}, "not allowed"),
    ({"x": [0]}, {"set": {"seed": "=1 // x"}}, "ZeroDivisionError"),
    ({"x": [1]}, {"set": {"seed": "=cluster.pools.nope.gpus"}}, "no key cluster.pools.nope"),
    ({"model.name": [1]}, {}, "model is 'qwen3-30b-a3b', not a mapping"),
    ({"strategy": {"choices": {"a": {"nope": 1}}}}, {}, "axes.strategy.choices.a.nope: not a config key path"),
    ({"cluster": {"choices": {"a": {}}}}, {}, "give it a variable name"),
    ({"not an identifier": [1]}, {}, "config key path"),
])
def test_mistakes_name_the_key(axes, extra, match):
    with pytest.raises(ConfigError, match=match):
        points(axes, **extra)


def test_unknown_keys_of_the_sweep_file_are_errors():
    with pytest.raises(ConfigError, match="s.yaml: axis: unknown key"):
        sweep_from_dict({"base": BASE, "axis": {}}, source="s.yaml")
    with pytest.raises(ConfigError, match="strategy"):
        sweep_from_dict({"base": BASE, "axes": {"x": [1]}, "strategy": "y"}, source="s.yaml")


def test_base_file_relative_to_the_sweep_and_overrides(tmp_path):
    import yaml

    from frontier_dag.sweep import load_sweep

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "axes": {"seed": [0, 1]}}))
    sweep = load_sweep(tmp_path / "s.yaml", ["workload.clients=3"])
    assert sweep.base["workload"]["clients"] == 3 and sweep.base_dir == tmp_path and sweep.name == "s"
    assert [p.config["seed"] for p in expand(sweep).points] == [0, 1]


def test_early_stop_slice():
    assert EarlyStopConfig(requests=0.1).slice_size(1000) == 100
    assert EarlyStopConfig(requests=200).slice_size(100) == 100
    assert EarlyStopConfig().slice_size(1000) == 200
    assert EarlyStopConfig(requests=0.25).slice_size(300, warmup_requests=100) == 150  # warm-up, then 50 measured
