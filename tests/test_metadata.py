"""Metadata: slot mapping, positions, query offsets, padding values, packing layout."""

from __future__ import annotations

import numpy as np
import pytest

from cgraph.engine import (BlockAllocator, MetadataLayout, Request, ScheduledBatch, ScheduledSeq,
                           Scheduler, build_metadata, num_blocks_for)


def _random_batch(rng, block_size=16, max_blocks=8):
    """Random mixed batch: some decodes (start > 0, one token) then prefills, random blocks."""
    perm = rng.permutation(200)
    seqs, used = [], 0
    n_dec = int(rng.integers(0, 4))
    for i in range(n_dec + int(rng.integers(1, 4))):
        if i < n_dec:
            start, q = int(rng.integers(1, block_size * max_blocks - 1)), 1
        else:
            start, q = 0, int(rng.integers(1, block_size * max_blocks))
        nb = num_blocks_for(start + q, block_size)
        blocks = tuple(int(b) for b in perm[used:used + nb])
        used += nb
        seqs.append(ScheduledSeq(i, tuple(int(t) for t in rng.integers(1, 1000, size=q)), start, blocks))
    return ScheduledBatch(tuple(seqs), n_dec)


def test_metadata_matches_a_token_by_token_reference():
    rng = np.random.default_rng()
    for _ in range(20):
        b = _random_batch(rng)
        pad_t = b.num_tokens + int(rng.integers(0, 9))
        pad_s = len(b.seqs) + int(rng.integers(0, 4))
        m = build_metadata(b, num_tokens=pad_t, num_seqs=pad_s, max_blocks=8)
        row = 0
        for s, seq in enumerate(b.seqs):
            assert m.query_start_loc[s] == row
            for j, tok in enumerate(seq.token_ids):
                p = seq.start + j
                assert m.input_ids[row] == tok and m.positions[row] == p
                assert m.slot_mapping[row] == seq.block_ids[p // 16] * 16 + p % 16
                row += 1
            assert m.seq_lens[s] == seq.start + seq.query_len
            assert m.logits_indices[s] == row - 1
            assert list(m.block_tables[s, :len(seq.block_ids)]) == list(seq.block_ids)
        assert m.num_seqs == len(b.seqs) and m.num_tokens == b.num_tokens == row
        # padding rows are inert
        assert (m.slot_mapping[row:] == -1).all() and (m.positions[row:] == 0).all()
        assert (m.input_ids[row:] == 0).all()
        assert (m.query_start_loc[len(b.seqs):] == row).all()
        assert (m.seq_lens[len(b.seqs):] == 0).all() and (m.logits_indices[len(b.seqs):] == 0).all()
        assert all(a.dtype == np.int32 for a in (m.input_ids, m.positions, m.slot_mapping,
                                                 m.block_tables, m.seq_lens, m.query_start_loc))


def test_slots_of_a_scheduled_run_are_unique_and_inside_the_cache():
    rng = np.random.default_rng()
    alloc = BlockAllocator(64)
    s = Scheduler(max_num_seqs=4, max_num_batched_tokens=100, allocator=alloc)
    for i in range(6):
        s.add(Request(i, rng.integers(0, 9, size=int(rng.integers(1, 90))), max_new_tokens=5))
    seen: dict[int, tuple] = {}
    while (b := s.schedule()) is not None:
        m = build_metadata(b, num_tokens=b.num_tokens, num_seqs=len(b.seqs), max_blocks=8)
        for slot, pos, seq_i in zip(m.slot_mapping, m.positions,
                                    np.repeat(np.arange(len(b.seqs)), np.diff(m.query_start_loc))):
            key = (b.seqs[seq_i].request_id, int(pos))
            assert 0 <= slot < 64 * 16
            # a slot is owned by one (request, position) while that request lives
            assert seen.get(int(slot), key) == key or seen[int(slot)][0] in s.finished
            seen[int(slot)] = key
        s.update(b, rng.integers(0, 9, size=len(b.seqs)).tolist())


def test_metadata_rejects_sizes_too_small():
    b = ScheduledBatch((ScheduledSeq(0, (1, 2, 3), 0, (4,)),), 0)
    with pytest.raises(ValueError, match="padded sizes"):
        build_metadata(b, num_tokens=2, num_seqs=1, max_blocks=4)
    b2 = ScheduledBatch((ScheduledSeq(0, (1,) * 20, 0, (4,)),), 0)
    with pytest.raises(ValueError, match="blocks"):
        build_metadata(b2, num_tokens=32, num_seqs=1, max_blocks=4)


def test_packed_layout_round_trips_every_field():
    rng = np.random.default_rng()
    layout = MetadataLayout(max_tokens=800, max_seqs=7, max_blocks=8)  # a random batch has <= 762 tokens
    packed = np.full(layout.size, -7, np.int32)
    b = _random_batch(rng)
    pad_t, pad_s = min(800, b.num_tokens + 5), 7
    m = build_metadata(b, num_tokens=pad_t, num_seqs=pad_s, max_blocks=8)
    used = layout.pack(m, packed)
    assert used == layout.used(pad_s) <= layout.size
    for name, (sl, shape) in layout.slices(pad_t, pad_s).items():
        assert sl.stop <= used and sl.start % 32 == 0
        want = np.int32(m.num_seqs) if name == "num_seqs" else getattr(m, name)
        np.testing.assert_array_equal(packed[sl].reshape(shape), np.reshape(want, shape))
    # fields never overlap
    spans = sorted((layout.offset(f), layout.offset(f) + layout.capacity(f))
                   for f in ("input_ids", "positions", "slot_mapping", "logits_indices",
                             "seq_lens", "query_start_loc", "num_seqs", "block_tables"))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    with pytest.raises(ValueError, match="exceed"):
        layout.slices(801, 7)


def test_block_allocator_hands_out_distinct_blocks_and_catches_double_free():
    a = BlockAllocator(10, block_size=4)
    x = a.allocate(9)  # 3 blocks
    y = a.allocate(16)  # 4 blocks
    assert len(set(x) | set(y)) == 7 and a.num_free == 3
    assert not a.can_allocate(13) and a.can_allocate(12)
    with pytest.raises(RuntimeError, match="free blocks"):
        a.allocate(13)
    a.free(x)
    with pytest.raises(ValueError, match="not allocated"):
        a.free(x)
    assert a.num_free == 6


def test_advancing_a_decode_step_gives_the_next_step_s_metadata():
    """reference.advance_decode (the kernel's contract) equals build_metadata of the next
    scheduled decode step of the same requests, with the decode inputs fed on the device."""
    from cgraph.kernels import reference

    rng = np.random.default_rng()
    n = int(rng.integers(1, 6))
    sched = Scheduler(max_num_seqs=8, max_num_batched_tokens=256, allocator=BlockAllocator(200))
    for i in range(n):
        sched.add(Request(i, rng.integers(0, 100, size=int(rng.integers(1, 40))).tolist(), max_new_tokens=40))
    batch = sched.schedule()
    sched.update(batch)  # tokens not read back: decodes are fed on the device
    padded = 8
    prev = None
    for _ in range(30):
        batch = sched.schedule()
        assert batch.uniform_decode and len(batch.seqs) == n
        meta = build_metadata(batch, num_tokens=padded, num_seqs=padded, max_blocks=8)
        if prev is not None:
            got = reference.advance_decode(prev.positions, prev.seq_lens, prev.slot_mapping, prev.token_source,
                                           prev.block_tables, prev.num_seqs, 16)
            for name, arr in zip(("positions", "seq_lens", "slot_mapping", "token_source"), got):
                np.testing.assert_array_equal(arr, getattr(meta, name), err_msg=name)
        sched.update(batch)
        prev = meta
