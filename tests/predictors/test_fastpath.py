"""The compiled prediction path gives bit for bit what the numpy reference gives
(``features.feature_matrix``, ``FlatForest.leaves``, ``FamilyModel.predict``), on random
heterogeneous batches of every family it serves."""

from __future__ import annotations

import numpy as np
import pytest
from predictor_profiles import H200, MAKERS, SETTINGS, attention, profile

from frontier_dag.predictors.fitting import fit_family

fastpath = pytest.importorskip("frontier_dag.predictors.fastpath")


@pytest.mark.parametrize("family", sorted(MAKERS))
def test_compiled_path_matches_the_reference_bit_for_bit(family):
    rng = np.random.default_rng(sum(map(ord, family)))
    model = fit_family(family, profile(family, rng), H200, SETTINGS, n_jobs=1)
    compiled = fastpath.CompiledFamily(model, fastpath.HardwareTables(H200))
    for rows in (1, 3, 17):
        query = MAKERS[family](rng, rows, family)
        expected = model.predict(query, H200)
        got = compiled.predict(query, rows)
        for name, want, have in zip(("latency", "std", "out_of_range"), expected, got, strict=True):
            assert np.array_equal(want, have), (family, rows, name)


def test_constant_columns_and_empty_rows():
    rng = np.random.default_rng(0)
    model = fit_family("attention_decode", profile("attention_decode", rng), H200, SETTINGS, n_jobs=1)
    compiled = fastpath.CompiledFamily(model, fastpath.HardwareTables(H200))
    query = attention(rng, 5, "attention_decode")
    uniform = {c: ([v[0]] * 5 if c not in ("q_lens", "ctx_lens") else v) for c, v in query.items()}
    assert np.array_equal(compiled.predict(uniform, 5)[0], model.predict(uniform, H200)[0])
    with_empty = {c: [*v[:2], np.zeros(0, dtype=np.int64) if c in ("q_lens", "ctx_lens") else v[0]]
                  for c, v in uniform.items()}
    latency, std, out_of_range = compiled.predict(with_empty, 3)
    assert latency[2] == 0 and std[2] == 0 and not out_of_range[2]  # no sequences, no time
    assert np.array_equal(latency[:2], model.predict({c: v[:2] for c, v in uniform.items()}, H200)[0])
    with pytest.raises(ValueError, match="differ in length"):
        compiled.predict({**uniform, "ctx_lens": [c[:-1] if len(c) > 1 else c[:0] for c in uniform["ctx_lens"]]}, 5)
