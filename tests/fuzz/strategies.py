"""Inputs a hostile or broken peer might send: random bytes, mutations of valid messages,
and text that looks like a number to some checks and not to others."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ..strategies import json_values

#: Multiplies every fuzz test's example count: ``INTENTUS_FUZZ_SCALE=20`` for a deep run.
SCALE = max(1, int(os.environ.get("INTENTUS_FUZZ_SCALE", "1")))


def examples(count: int) -> int:
    """``count`` examples, times ``SCALE``: small enough by default for every test run."""
    return count * SCALE


def fuzzing(count: int) -> settings:
    """Settings of a fuzz test: ``examples(count)``, no per-example deadline (real I/O and a
    loaded machine), large or slow inputs allowed."""
    return settings(max_examples=examples(count), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


#: Characters that ``str.isdigit`` accepts but ``int`` does not (superscripts, circled
#: digits), digits of other scripts, and the usual suspects around numbers.
NUMBERISH_ALPHABET = "0123456789²³¹⁰⁹①⑨\u0661\u0662\u0660\uff10\uff19 \t+-_.eE"
numberish = st.text(alphabet=NUMBERISH_ALPHABET, max_size=14)

#: Header values: anything, or something that almost parses as a count.
header_values = st.one_of(numberish, st.text(max_size=20))

Mutation = tuple[str, int, int, bytes]

byte_mutations: st.SearchStrategy[list[Mutation]] = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
        st.integers(0, 1 << 16),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def mutate(original: bytes, ops: list[Mutation]) -> bytes:
    """Apply bit flips, overwrites, cuts, insertions and deletions at wrapped positions."""
    data = bytearray(original)
    for kind, pos, value, blob in ops:
        if not data:
            data += blob
            continue
        pos %= len(data)
        if kind == "flip":
            data[pos] ^= 1 << (value % 8)
        elif kind == "set":
            data[pos] = value
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = blob
        else:
            del data[pos : pos + 1 + value % 8]
    return bytes(data)


@st.composite
def mutated_json(draw: st.DrawFn, original: Any) -> Any:
    """``original`` with a few values (at any depth) replaced, removed or added."""

    def walk(value: Any) -> Any:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            return draw(json_values)
        if type(value) is dict and value:
            out = dict(value)
            key = draw(st.sampled_from(sorted(out)))
            if choice == 1:
                del out[key]
            elif choice == 2:
                out[draw(st.text(max_size=8))] = draw(json_values)
            else:
                out[key] = walk(out[key])
            return out
        if type(value) is list and value:
            out_list = list(value)
            index = draw(st.integers(0, len(out_list) - 1))
            out_list[index] = walk(out_list[index])
            return out_list
        return value

    value = original
    for _ in range(draw(st.integers(1, 3))):
        value = walk(value)
    return value
