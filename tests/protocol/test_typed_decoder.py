"""The codec's msgspec fast path against the Python decoder: same objects, same refusals.

``typed_decoder.decode_frame`` may decline a frame (return None) but must never accept one
the Python decoder refuses, nor build a different object from one it accepts.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intentus_trio import (
    AgentResponse,
    FrameCodec,
    IntentusError,
    TransportEnvelope,
    new_event,
    new_intent,
)
from intentus_trio.emcl import EmclProtector, Keyring
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol import codec, typed_decoder
from intentus_trio.protocol.enums import MessageType, TransportProtocol
from intentus_trio.protocol.limits import MAX_HEADERS, MAX_LIST_ITEMS, MAX_NAME_CHARS
from intentus_trio.transports.framing import event_frame, request_frame, response_frame

from ..strategies import frames

CODEC = FrameCodec()


def python_decode(data: bytes | str) -> TransportEnvelope | IntentusError:
    try:
        return codec.frame_from_json(codec.loads(data))
    except IntentusError as exc:
        return exc


#: The ``expect`` values callers pass: none, a server's, a client's.
EXPECTS = (None, MessageType.INTENT, MessageType.RESPONSE)


def assert_agrees(data: bytes | str) -> TransportEnvelope | None:
    """The fast path declines, or builds exactly what the Python decoder builds, whatever
    message type the caller expects."""
    slow = python_decode(data)
    results = [typed_decoder.decode_frame(data, expect) for expect in EXPECTS]
    for fast in results:
        if fast is not None:
            assert not isinstance(slow, IntentusError), (
                f"fast path accepted what {slow!r} refuses")
            assert fast == slow
            assert type(fast.body) is type(slow.body)
    # Expecting a type changes how fast a frame is parsed, never whether it is.
    assert len({fast is None for fast in results}) == 1
    return results[0]


@settings(max_examples=400)
@given(frames())
def test_every_encoded_frame_takes_the_fast_path(frame: TransportEnvelope) -> None:
    data = CODEC.encode(frame)
    fast = assert_agrees(data)
    assert fast == frame
    assert assert_agrees(data.decode()) == frame  # text, as WebSocket delivers it


# --------------------------------------------------------------------------- mutations

_BAD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 10**30, "", "x" * (MAX_NAME_CHARS + 1), [], ["a"],
    ["x" * (MAX_NAME_CHARS + 1)], ["a"] * (MAX_LIST_ITEMS + 1), {}, {"a": 1}, "low",
    "direct", "error", "INTENTUSNET/1.0", "emcl", "\u00e9" * MAX_NAME_CHARS,
    "\u00e9" * (MAX_NAME_CHARS + 1),
]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _delete(obj: Any, path: tuple[Any, ...]) -> None:
    for key in path[:-1]:
        obj = obj[key]
    del obj[path[-1]]


@settings(max_examples=600)
@given(frames(), st.data())
def test_mutated_fields_never_split_the_two_paths(frame: TransportEnvelope, data: Any) -> None:
    obj = orjson.loads(CODEC.encode(frame))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(obj)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        if data.draw(st.booleans()) and isinstance(path[-1], str):
            _delete(obj, path)
        else:
            _set(obj, path, copy.deepcopy(data.draw(st.sampled_from(_BAD_VALUES))))
    assert_agrees(codec.dumps(obj))


@settings(max_examples=300)
@given(frames(), st.data())
def test_flipped_bytes_never_split_the_two_paths(frame: TransportEnvelope, data: Any) -> None:
    raw = bytearray(CODEC.encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    assert_agrees(bytes(raw))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_from_the_fast_path(data: bytes) -> None:
    assert_agrees(data)


# --------------------------------------------------------------------------- edges


def _intent_frame() -> dict[str, Any]:
    frame = codec.frame_to_json(
        TransportEnvelope(
            codec.TransportProtocol.HTTP, codec.MessageType.INTENT, new_intent("x", {"a": 1})
        )
    )
    return orjson.loads(orjson.dumps(frame))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"protocol":"http","messageType":"intent","body":{}}',
        b'{"protocol":"http","messageType":"intent","headers":null,"body":null}',
        b'{"protocol":"http","messageType":"intent","body":{"a":"\\ud800"}}',
        b'{"protocol":"http","messageType":"intent","body":{"a":"\xff"}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"protocol":"http","messageType":"intent","body":' + b"[" * 50_000,
    ],
)
def test_refused_edges_decline_the_fast_path(raw: bytes) -> None:
    assert typed_decoder.decode_frame(raw) is None
    with pytest.raises(IntentusError):
        CODEC.decode(raw)


def test_duplicate_keys_take_the_last_value_on_both_paths() -> None:
    data = orjson.dumps(_intent_frame()).replace(
        b'"messageType":"intent"', b'"messageType":"event","messageType":"intent"'
    )
    assert assert_agrees(data) is not None


@pytest.mark.parametrize("kind", ["event", "emcl", "response"])
def test_a_frame_other_than_the_expected_type_is_decoded_by_the_general_path(
    kind: str,
) -> None:
    """A server expects intents: a frame of another type, even one whose payload holds the
    intent type's marker as a key (so the one-pass attempt is made), is decoded as what it
    is."""
    lookalike = {"messageType": "intent"}
    if kind == "event":
        frame = event_frame(new_event("e", lookalike), TransportProtocol.WEBSOCKET)
    elif kind == "response":
        frame = response_frame(AgentResponse.success(lookalike), TransportProtocol.WEBSOCKET)
    else:
        ring = Keyring()
        ring.add_group_key("g", generate_master_key())
        frame = EmclProtector(ring, "a").seal(
            request_frame(new_intent("i", lookalike), TransportProtocol.WEBSOCKET))
    data = CODEC.encode(frame)
    assert b'"messageType":"intent"' in data
    for item in (data, data.decode()):
        assert typed_decoder.decode_frame(item, MessageType.INTENT) == frame
        assert CODEC.decode(item, MessageType.INTENT) == frame


def _response_frame() -> dict[str, Any]:
    frame = codec.frame_to_json(response_frame(AgentResponse.success({"a": 1}),
                                               TransportProtocol.HTTP))
    return orjson.loads(orjson.dumps(frame))


@pytest.mark.parametrize("expect", [MessageType.INTENT, MessageType.RESPONSE])
def test_the_one_pass_path_checks_the_type_and_the_emcl_header_after_parsing(
    expect: MessageType,
) -> None:
    """The expected body parses, but the frame is not what it looks like: an ``emcl`` header
    (the body should be sealed), or a later ``messageType`` key that wins. Both paths
    refuse it."""
    obj = _intent_frame() if expect is MessageType.INTENT else _response_frame()
    obj["headers"]["emcl"] = "1.0"
    sealed_header = codec.dumps(obj)
    name = expect.value.encode()
    retyped = codec.dumps(
        _intent_frame() if expect is MessageType.INTENT else _response_frame()
    ).replace(b'"messageType":"' + name + b'"',
              b'"messageType":"' + name + b'","messageType":"event"')
    for data in (sealed_header, retyped):
        assert f'"messageType":"{expect.value}"'.encode() in data
        assert typed_decoder.decode_frame(data, expect) is None
        assert assert_agrees(data) is None
        assert isinstance(python_decode(data), IntentusError)


def test_large_integers_in_payloads_stay_exact() -> None:
    obj = _intent_frame()
    obj["body"]["payload"] = {"big": 2**80, "small": -(2**70)}
    data = codec.dumps(obj)
    frame = assert_agrees(data)
    assert frame is not None and frame.body.payload == {"big": 2**80, "small": -(2**70)}
    assert codec.loads(CODEC.encode(frame))["body"]["payload"]["big"] == 2**80


def test_too_many_headers_decline_and_are_refused() -> None:
    obj = _intent_frame()
    obj["headers"] = {f"h{i}": "v" for i in range(MAX_HEADERS + 1)}
    data = codec.dumps(obj)
    assert typed_decoder.decode_frame(data) is None
    assert isinstance(python_decode(data), IntentusError)


def test_dumps_writes_json_and_msgspecs_documented_mapping_and_refuses_the_rest() -> None:
    assert codec.loads(codec.dumps({"big": 2**80, "s": "é", "f": 1.5})) == {
        "big": 2**80, "s": "é", "f": 1.5}
    assert codec.loads(codec.dumps({"set": {1}, "bytes": b"\x00\xff", 3: "key"})) == {
        "set": [1], "bytes": "AP8=", "3": "key"}

    class Loud(str):
        def __str__(self) -> str:
            raise RuntimeError("never called")

    class Shifted(int):
        def __int__(self) -> int:
            return 99

    # A subclass is written as its plain value, without calling its overrides.
    assert codec.dumps([Loud("plain"), Shifted(3)]) == b'["plain",3]'
    with pytest.raises(TypeError):
        codec.dumps({"thing": object()})
    with pytest.raises(TypeError):  # a cycle
        loop: list[object] = []
        loop.append(loop)
        codec.dumps(loop)
    with pytest.raises(TypeError):  # a lone surrogate has no UTF-8 form
        codec.dumps({"s": "\ud800"})
