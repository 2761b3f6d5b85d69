"""A paged KV cache per replica: fixed-size blocks, and a prefix cache by block hash.

Sequences hold blocks of ``block_size`` tokens. With prefix caching, prompt blocks
that a finished or running request computed stay indexed by their hash; a later
request whose prompt starts with the same hashes reuses them instead of computing
those tokens again. Cached blocks that no sequence holds are evicted, least
recently used first, when memory is needed.
"""

from __future__ import annotations

from collections import OrderedDict


class KVCache:
    def __init__(self, capacity_blocks: int, block_size: int, prefix_block_tokens: int = 0):
        self.capacity = int(capacity_blocks)
        self.block_size = int(block_size)
        self.used = 0  # blocks held by sequences (and by referenced prefix entries)
        self.peak = 0
        # prefix cache: hash -> [refcount, blocks]; unreferenced entries are evictable (LRU order)
        self.prefix_block_tokens = prefix_block_tokens
        self._prefix: OrderedDict[int, list[int]] = OrderedDict()
        self._evictable = 0

    @property
    def free(self) -> int:
        """Blocks available now (evictable prefix blocks count as available)."""
        return self.capacity - self.used + self._evictable

    def blocks_for(self, tokens: int) -> int:
        return -(-int(tokens) // self.block_size)

    def allocate(self, blocks: int) -> bool:
        if blocks <= 0:
            return True
        if blocks > self.free:
            return False
        over = self.used + blocks - (self.capacity - self._evictable)
        if over > 0:
            self._evict(over)
        self.used += blocks
        self.peak = max(self.peak, self.used)
        return True

    def release(self, blocks: int) -> None:
        self.used -= int(blocks)

    # -- prefix caching ------------------------------------------------------------------------
    def count_prefix(self, hashes) -> int:
        """Leading hashes of ``hashes`` that are cached (no side effects)."""
        hit = 0
        for h in hashes:
            if int(h) not in self._prefix:
                break
            hit += 1
        return hit

    def match_prefix(self, hashes) -> int:
        """Leading hashes of ``hashes`` that are cached; references them (call ``unref_prefix``
        with the same count when the sequence ends)."""
        hit = 0
        for h in hashes:
            entry = self._prefix.get(int(h))
            if entry is None:
                break
            if entry[0] == 0:
                self._evictable -= entry[1]
                self.used += entry[1]
            entry[0] += 1
            self._prefix.move_to_end(int(h))
            hit += 1
        return hit

    def insert_prefix(self, hashes, blocks_each: int) -> int:
        """Index a sequence's computed prompt blocks by hash. The cache takes over those
        blocks from the sequence (the caller drops them from its own count) and the
        sequence keeps a reference until it ends. Returns how many entries were added."""
        added = 0
        for h in hashes:
            h = int(h)
            if h in self._prefix:
                break
            self._prefix[h] = [1, blocks_each]
            added += 1
        return added

    def unref_prefix(self, hashes) -> None:
        for h in hashes:
            entry = self._prefix.get(int(h))
            if entry is None:
                continue
            entry[0] -= 1
            if entry[0] == 0:
                self.used -= entry[1]
                self._evictable += entry[1]

    def _evict(self, blocks: int) -> None:
        for h in list(self._prefix):
            if blocks <= 0:
                break
            entry = self._prefix[h]
            if entry[0] == 0:
                del self._prefix[h]
                self._evictable -= entry[1]
                blocks -= entry[1]
