"""The KV block manager's interface and the decode set's clock, on their own."""

from __future__ import annotations

import numpy as np

from frontier_dag.sim.decode_set import DecodeSet
from frontier_dag.sim.kv import KVCache


def test_block_manager_counts_blocks_and_prefix_references():
    kv = KVCache(10, 16, prefix_block_tokens=32)
    assert kv.blocks_for(33) == 3 and kv.prefix_blocks_each == 2
    assert kv.can_allocate(10) and not kv.can_allocate(11)
    assert kv.allocate(4) and kv.free_blocks == 6 and not kv.allocate(7) and kv.used == 4
    # a computed prompt of 70 tokens indexes its two whole hash blocks; the cache holds its 4 blocks
    assert kv.cache_prompt(np.array([7, 8, 9]), 0, 70, 4) == (2, 4)
    assert kv.pinned_blocks == 4 and kv.cached_prefix([7, 8, 5]) == 2
    assert kv.match_prefix([7, 8]) == 2  # a second sequence shares them
    kv.free_sequence(0, [7, 8])
    assert kv.pinned_blocks == 4  # the first still references them
    kv.free_sequence(0, [7, 8])
    assert kv.pinned_blocks == 0 and kv.used == 0  # unreferenced: evictable
    assert kv.allocate(10) and kv.cached_prefix([7]) == 0  # evicted for room
    kv.free(10)
    assert kv.used == 0 and kv.peak == 10


def test_evictable_prefix_blocks_are_free_once():
    """An unreferenced prefix block is free (evicted on demand), counted once: a replica never
    holds more blocks than it has."""
    kv = KVCache(10, 16, prefix_block_tokens=32)
    kv.allocate(4)
    kv.cache_prompt(np.array([7, 8]), 0, 64, 4)
    kv.free_sequence(0, [7, 8])
    assert kv.free_blocks == 10 and kv.can_allocate(10) and not kv.can_allocate(11)
    assert kv.allocate(8) and kv.cached_prefix([7]) == 0 and kv.cached_prefix([8]) == 1  # 6 empty, 7 evicted
    assert kv.used == 8 and kv.free_blocks == 2
    assert not kv.allocate(3) and kv.allocate(2) and kv.cached_prefix([8]) == 0
    assert kv.used == kv.capacity == kv.peak


def test_decode_set_keeps_its_sequences_on_one_clock():
    ds = DecodeSet(capacity=4, block_size=4)
    ds.join(rid=5, ctx=7, left=3, shared=0, hits=0, order=1)  # emits at steps 0, 1, 2
    ds.step = 1
    ds.join(rid=6, ctx=4, left=1, shared=0, hits=0, order=2)  # emits at step 1
    assert ds.context_sum(ds.step) == 8 + 4
    np.testing.assert_array_equal(ds.contexts(), [8, 4])
    np.testing.assert_array_equal(ds.remaining(), [2, 1])
    # step 1 writes token 9 of request 5 (a new block: 8 % 4 == 0) and token 5 of request 6 (new block)
    assert ds.new_blocks() == 2 and ds.new_blocks(1) == 0
    np.testing.assert_array_equal(ds.own_blocks(np.arange(2)), [2, 1])
    ds.step = 2
    np.testing.assert_array_equal(ds.finished(), [False, True])
    assert ds.next_last == 1 and ds.newest() == 1
    dropped = ds.drop(ds.finished())  # the leaving sequences' columns, in COLUMNS order
    np.testing.assert_array_equal(dropped, [[6], [4 - 1], [1], [0], [0], [2]])
    assert ds.n == 1 and ds.next_last == 2 and ds.offset_sum == 7 and sum(ds.fill) == 1
    np.testing.assert_array_equal(ds.d["rid"][:1], [5])
    np.testing.assert_array_equal(ds.steps_contexts([0, 1]), [9, 10])


def test_new_blocks_ahead_walks_the_histogram_as_the_clock_does():
    rng = np.random.default_rng(0)
    for size in (1, 3, 16):
        ds = DecodeSet(capacity=1, block_size=size)
        ds.fill = rng.integers(0, 9, size).tolist()
        for step in range(2 * size + 1):
            ds.step = step
            for steps in (0, 1, size - 1, size, 3 * size + 2):
                assert ds.new_blocks_ahead(steps) == [ds.new_blocks(j) for j in range(steps)]
