"""A planned iteration's per-sequence arrays, whole and by part (replica._BatchArrays): a
mixed batch's memo misses build only the part they price."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from frontier_dag.cost.batch import BatchSummary, MicroBatchLoad
from frontier_dag.sim.batch import Prefilling
from frontier_dag.sim.decode_set import DecodeSet
from frontier_dag.sim.replica import ReplicaWorker, _BatchArrays


def _replica_with(contexts: list[int], step: int) -> SimpleNamespace:
    ds = DecodeSet(capacity=8, block_size=16)
    for i, ctx in enumerate(contexts):
        ds.join(rid=i, ctx=ctx, left=50, shared=0, hits=0, order=i)
    ds.step = step
    replica = SimpleNamespace(decode=ds)
    replica._arrays = lambda decode, chunks: ReplicaWorker._arrays(replica, decode, chunks)
    return replica


def _chunk(rid: int, ctx: int, chunk: int) -> Prefilling:
    p = Prefilling(rid, ctx, 1000, 5, 1, 0, 0, rid)
    p.chunk = chunk
    return p


def test_parts_are_the_whole_batch_split_by_new_tokens_in_batch_order():
    replica = _replica_with([100, 37, 512], step=3)
    chunks = [_chunk(10, 0, 300), _chunk(11, 64, 1), _chunk(12, 900, 200)]
    for decode in (True, False):
        arrays = _BatchArrays(replica, decode, chunks)
        q, ctx = arrays()
        for one_token in (True, False):
            chosen = (q == 1) if one_token else (q > 1)
            part_q, part_ctx = arrays.part(one_token)
            assert part_q.dtype == part_ctx.dtype == np.int64
            np.testing.assert_array_equal(part_q, q[chosen])
            np.testing.assert_array_equal(part_ctx, ctx[chosen])


def test_a_load_splits_its_lazy_arrays_by_their_own_part_or_by_mask():
    replica = _replica_with([100, 37], step=1)
    chunks = [_chunk(10, 16, 300)]
    arrays = _BatchArrays(replica, True, chunks)
    q, ctx = arrays()
    summary = BatchSummary.of(q, ctx)
    lazy = MicroBatchLoad(summary=summary, materialize=arrays)
    plain = MicroBatchLoad(summary=summary, materialize=lambda: (q, ctx))  # no part: masks the whole
    for one_token in (True, False):
        for got, want in zip(lazy.part(one_token), plain.part(one_token), strict=True):
            np.testing.assert_array_equal(got, want)
    assert lazy._q is None  # the part did not build the whole batch
