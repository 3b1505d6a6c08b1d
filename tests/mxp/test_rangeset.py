"""RangeSet against a plain Python set model."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from intentus_trio.mxp.rangeset import RangeSet


def covered(rs: RangeSet) -> set[int]:
    return {x for lo, hi in rs for x in range(lo, hi + 1)}


def check_invariants(rs: RangeSet) -> None:
    ranges = list(rs)
    for lo, hi in ranges:
        assert lo <= hi
    for (_, hi1), (lo2, _) in itertools.pairwise(ranges):
        assert hi1 + 1 < lo2, "ranges must be disjoint and not touching"


small = st.integers(0, 300)
op = st.one_of(
    st.tuples(st.just("add"), small, st.just(0)),
    st.tuples(st.just("add_range"), small, st.integers(-2, 40)),
    st.tuples(st.just("remove_range"), small, st.integers(-2, 40)),
    st.tuples(st.just("discard_below"), small, st.just(0)),
    st.tuples(st.just("shift_first"), st.integers(0, 30), st.just(0)),
)


@settings(max_examples=300)
@given(st.lists(op, max_size=80))
def test_matches_set_model(ops: list[tuple[str, int, int]]) -> None:
    rs = RangeSet(max_ranges=None)
    model: set[int] = set()
    for name, a, b in ops:
        if name == "add":
            rs.add(a)
            model.add(a)
        elif name == "add_range":
            rs.add_range(a, a + b)
            model.update(range(a, a + b + 1))
        elif name == "remove_range":
            rs.remove_range(a, a + b)
            model.difference_update(range(a, a + b + 1))
        elif name == "discard_below":
            rs.discard_below(a)
            model = {x for x in model if x >= a}
        else:
            first = min(model) if model else None
            taken = rs.shift_first(a)
            if first is None or a == 0:
                assert taken is None
            else:
                lo, hi = taken  # type: ignore[misc]
                assert lo == first and hi - lo + 1 <= a
                run_end = first
                while run_end + 1 in model:
                    run_end += 1
                expect = list(range(first, run_end + 1))
                assert list(range(lo, hi + 1)) == expect[:a]
                model.difference_update(range(lo, hi + 1))
        check_invariants(rs)
        assert covered(rs) == model
    assert rs.min() == (min(model) if model else None)
    assert rs.max() == (max(model) if model else None)
    assert bool(rs) == bool(model)
    for x in range(0, 350, 7):
        assert (x in rs) == (x in model)


@given(st.sets(small, max_size=60), small, st.integers(0, 50))
def test_missing_and_covers(values: set[int], lo: int, width: int) -> None:
    rs = RangeSet(max_ranges=None)
    for v in values:
        rs.add(v)
    hi = lo + width
    gaps = rs.missing(lo, hi)
    got = {x for a, b in gaps for x in range(a, b + 1)}
    assert got == {x for x in range(lo, hi + 1) if x not in values}
    for (_, b1), (a2, _) in itertools.pairwise(gaps):
        assert b1 + 1 < a2
    assert rs.covers(lo, hi) == all(x in values for x in range(lo, hi + 1))


def test_descending_is_ack_order() -> None:
    rs = RangeSet()
    for v in (1, 2, 3, 7, 8, 20):
        rs.add(v)
    assert rs.descending() == ((20, 20), (7, 8), (1, 3))
    assert len(rs) == 3


def test_max_ranges_forgets_the_lowest() -> None:
    rs = RangeSet(max_ranges=3)
    for v in range(0, 20, 2):
        rs.add(v)
    assert list(rs) == [(14, 14), (16, 16), (18, 18)]
    rs.add_range(30, 40)
    assert list(rs) == [(16, 16), (18, 18), (30, 40)]


def test_empty_and_degenerate_ranges() -> None:
    rs = RangeSet(max_ranges=None)
    rs.add_range(5, 4)
    rs.remove_range(5, 4)
    assert not rs and rs.first() is None and rs.shift_first(3) is None
    assert rs.missing(3, 2) == []
    rs.add_range(0, 10)
    rs.remove_range(3, 5)
    assert list(rs) == [(0, 2), (6, 10)]
    rs.clear()
    assert not rs


def test_large_ranges_are_cheap() -> None:
    rs = RangeSet(max_ranges=None)
    rs.add_range(0, 10**15)
    rs.remove_range(10, 10**14)
    assert list(rs) == [(0, 9), (10**14 + 1, 10**15)]
    assert 10**15 in rs and 11 not in rs
