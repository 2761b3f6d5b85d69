"""A paged KV cache per replica: fixed-size blocks, and a prefix cache by block hash.

The block manager the replica and its scheduling policy call, as vLLM's scheduler calls
its own: ``can_allocate`` / ``allocate`` / ``free`` count blocks, ``blocks_for`` converts
tokens, and the prefix operations (``cached_prefix``, ``match_prefix``, ``insert_prefix``,
``free_sequence``) keep the shared blocks' references. Sequences hold blocks of
``block_size`` tokens. With prefix caching, prompt blocks
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
    def free_blocks(self) -> int:
        """Blocks available now: the empty ones and the unreferenced prefix-cache blocks, which
        are evicted on demand (``used`` leaves both out, so that is ``capacity - used``)."""
        return self.capacity - self.used

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens."""
        return -(-int(tokens) // self.block_size)

    def can_allocate(self, blocks: int) -> bool:
        return blocks <= self.capacity - self.used

    def allocate(self, blocks: int) -> bool:
        """Take ``blocks`` blocks (evicting unreferenced prefix entries as needed); False, taking
        nothing, when fewer are free."""
        if blocks <= 0:
            return True
        if blocks > self.capacity - self.used:
            return False
        over = self.used + self._evictable + blocks - self.capacity  # the empty blocks do not suffice
        if over > 0:
            self._evict(over)
        self.used += blocks
        self.peak = max(self.peak, self.used)
        return True

    def free(self, blocks: int) -> None:
        """Give back ``blocks`` blocks a sequence held."""
        self.used -= int(blocks)

    def free_sequence(self, blocks: int, hashes) -> None:
        """A sequence ends: give back its own ``blocks`` and its references to the prefix
        entries ``hashes`` (those it matched or inserted)."""
        self.used -= int(blocks)
        if len(hashes):
            self.unref_prefix(hashes)

    # -- prefix caching ------------------------------------------------------------------------
    @property
    def prefix_blocks_each(self) -> int:
        """Blocks of one prefix-cache entry (0 without prefix caching)."""
        return self.blocks_for(self.prefix_block_tokens) if self.prefix_block_tokens else 0

    @property
    def pinned_blocks(self) -> int:
        """Blocks held by prefix entries that a sequence still references."""
        return sum(blocks for refs, blocks in self._prefix.values() if refs > 0)

    def cached_prefix(self, hashes) -> int:
        """Leading hashes of ``hashes`` that are cached (no side effects)."""
        hit = 0
        for h in hashes:
            if int(h) not in self._prefix:
                break
            hit += 1
        return hit

    def cache_prompt(self, hashes, hits: int, prompt_tokens: int, own_blocks: int) -> tuple[int, int]:
        """Index a computed prompt's whole blocks past the ``hits`` entries it matched, so later
        requests can reuse them: (entries added, blocks of the sequence's own ``own_blocks``
        the cache holds from now on)."""
        whole = min(len(hashes), prompt_tokens // self.prefix_block_tokens)
        each = self.prefix_blocks_each
        added = self.insert_prefix(hashes[hits:whole], each)
        return added, min(added * each, own_blocks)

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
