"""Property-based tests of the bucket planner (docs/protocol.md §2)."""

from __future__ import annotations

import hashlib
import math
from typing import Dict, List

from hypothesis import given, settings, strategies as st

from gui.protocol.wire import (MAX_PULL_URL_LENGTH, Bucket, InstanceInfo, WireFormatError,
                               chunks_uri, plan_buckets)


def orthanc_id(n: int) -> str:
    digest = hashlib.sha1(str(n).encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


@st.composite
def instance_sets(draw, max_size: int = 5000):
    count = draw(st.integers(min_value=0, max_value=40))
    keys = draw(st.lists(st.integers(0, 10 ** 6), min_size=count, max_size=count, unique=True))
    sizes = draw(st.lists(st.integers(0, max_size), min_size=count, max_size=count))
    return [InstanceInfo(orthanc_id(k), s, "0" * 32) for k, s in zip(keys, sizes)]


def coverage(buckets: List[Bucket]) -> Dict[str, List[tuple]]:
    ranges: Dict[str, List[tuple]] = {}
    for bucket in buckets:
        for chunk in bucket.chunks:
            ranges.setdefault(chunk.instance_id, []).append((chunk.offset, chunk.size))
    return ranges


@settings(max_examples=300, deadline=None)
@given(instance_sets(), st.integers(min_value=1, max_value=3000))
def test_every_byte_is_covered_exactly_once(instances, bucket_size):
    buckets = plan_buckets(instances, bucket_size)
    ranges = coverage(buckets)
    for info in instances:
        pieces = sorted(ranges.get(info.id, []))
        if info.size == 0:
            assert pieces == []          # empty chunks are dropped
            continue
        position = 0
        for offset, size in pieces:
            assert offset == position, f"gap or overlap in {info.id}"
            assert size > 0
            position += size
        assert position == info.size
    assert set(ranges) <= {i.id for i in instances}


@settings(max_examples=300, deadline=None)
@given(instance_sets(), st.integers(min_value=1, max_value=3000))
def test_chunk_rules_and_sizes(instances, bucket_size):
    buckets = plan_buckets(instances, bucket_size)
    by_id = {i.id: i for i in instances}
    split_pieces: Dict[str, int] = {}
    for bucket in buckets:
        assert bucket.chunks, "no empty bucket"
        for position, chunk in enumerate(bucket.chunks):
            info = by_id[chunk.instance_id]
            if position > 0:
                assert chunk.offset == 0, "only the first chunk may have an offset"
                previous = bucket.chunks[position - 1]
                assert previous.size == by_id[previous.instance_id].size, \
                    "nothing may follow a partial chunk"
            if info.size >= 2 * bucket_size:
                assert len(bucket.chunks) == 1       # split instances travel alone
                split_pieces[info.id] = split_pieces.get(info.id, 0) + 1
            elif info.size >= bucket_size:
                assert bucket.chunks == [bucket.chunks[0]] and chunk.size == info.size
            else:
                assert chunk.size == info.size       # small instances are never cut
    for info in instances:
        if info.size >= 2 * bucket_size:
            assert split_pieces[info.id] == math.ceil(info.size / (2 * bucket_size))


@settings(max_examples=300, deadline=None)
@given(instance_sets(), st.integers(min_value=1, max_value=3000))
def test_groups_close_once_they_reach_the_bucket_size(instances, bucket_size):
    buckets = plan_buckets(instances, bucket_size)
    grouped = [b for b in buckets if all(by.size < bucket_size for by in
                                         [i for i in instances if i.id in b.instance_ids()])]
    for bucket in grouped[:-1]:
        assert bucket.total_size >= bucket_size
        # It closed as soon as it reached B: without its last chunk it was below B.
        assert bucket.total_size - bucket.chunks[-1].size < bucket_size
    # Order: alone/split buckets first, then the grouped ones; IDs ascending within each part.
    kinds = [b in grouped for b in buckets]
    assert kinds == sorted(kinds)


@settings(max_examples=200, deadline=None)
@given(instance_sets(max_size=300), st.integers(min_value=1, max_value=100_000),
       st.integers(min_value=10, max_value=1500))
def test_pull_urls_stay_short(instances, bucket_size, base_length):
    base = "http://h/" + "p" * base_length
    buckets = plan_buckets(instances, bucket_size, pull_base_url=base)
    for bucket in buckets:
        if len(bucket.chunks) > 1:
            # A multi-chunk bucket closed before its URL reached the limit... or right at
            # the chunk that made it reach it; without that chunk it was below.
            shorter = Bucket(list(bucket.chunks[:-1]))
            assert len(base + chunks_uri(shorter, "none")) < MAX_PULL_URL_LENGTH


def test_hand_written_examples():
    B = 100
    a, b, c, d, e = (InstanceInfo(orthanc_id(n), size, "0" * 32)
                     for n, size in ((1, 450), (2, 150), (3, 30), (4, 80), (5, 10)))
    buckets = plan_buckets([a, b, c, d, e], B)
    described = [[(ch.instance_id, ch.offset, ch.size) for ch in bk.chunks] for bk in buckets]
    ordered_small = sorted([c, d, e], key=lambda i: i.id)
    alone = sorted([a, b], key=lambda i: i.id)
    expected_alone = []
    for info in alone:
        if info is a:   # 450 >= 2B: ceil(450/200) = 3 pieces of 150
            expected_alone += [[(a.id, 0, 150)], [(a.id, 150, 150)], [(a.id, 300, 150)]]
        else:           # B <= 150 < 2B: alone and whole
            expected_alone += [[(b.id, 0, 150)]]
    groups, current, total = [], [], 0
    for info in ordered_small:
        current.append((info.id, 0, info.size))
        total += info.size
        if total >= B:
            groups.append(current)
            current, total = [], 0
    if current:
        groups.append(current)
    assert described == expected_alone + groups


def test_split_remainder_goes_to_the_last_piece():
    info = InstanceInfo(orthanc_id(9), 1001, "0" * 32)
    buckets = plan_buckets([info], 100)   # ceil(1001/200) = 6 pieces of 166, last 171
    assert [(b.chunks[0].offset, b.chunks[0].size) for b in buckets] == \
        [(0, 166), (166, 166), (332, 166), (498, 166), (664, 166), (830, 171)]


def test_duplicates_and_empty_instances():
    info = InstanceInfo(orthanc_id(1), 10, "0" * 32)
    empty = InstanceInfo(orthanc_id(2), 0, "0" * 32)
    buckets = plan_buckets([info, info, empty], 100)
    assert len(buckets) == 1 and buckets[0].instance_ids() == [info.id]


def test_bucket_refuses_chunks_after_a_partial_one():
    big = InstanceInfo(orthanc_id(1), 100, "0" * 32)
    small = InstanceInfo(orthanc_id(2), 10, "0" * 32)
    bucket = Bucket()
    bucket.add_chunk(small, 0, 10)
    bucket.add_chunk(big, 0, 50)
    try:
        bucket.add_chunk(small, 0, 10)
    except WireFormatError:
        return
    raise AssertionError("a chunk after a partial chunk was accepted")
