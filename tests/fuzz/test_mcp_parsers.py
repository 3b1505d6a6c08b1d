"""Fuzzing the MCP adapter, which reads a peer's ``tools/call`` params (server side) and its
``CallToolResult``s and JSON-RPC errors (client side). The wire JSON itself is parsed and
validated by the MCP SDK; what the adapter reads from it must give a valid result or a
ValidationError (which the server answers with INVALID_PARAMS), never another exception."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from intentus_trio.mcp.adapter import (
    META_INTENT_VERSION,
    META_PRIORITY,
    META_PROGRESS_TOKEN,
    META_TARGET_AGENT,
    META_TRACE_ID,
    META_TRACEPARENT,
    META_TRACESTATE,
    PROTOCOL_ERROR_CODES,
    ToolCall,
    envelope_from_tool_call,
    response_from_jsonrpc_error,
    response_from_tool_result,
    tool_result,
    trace_id_from_traceparent,
    traceparent_for,
)
from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.errors import ValidationError
from intentus_trio.protocol.models import AgentResponse, ErrorInfo

from ..strategies import json_objects, json_values
from .strategies import fuzzing

FAST = fuzzing(30)

META_KEYS = [META_TRACE_ID, META_TARGET_AGENT, META_INTENT_VERSION, META_PRIORITY,
             META_PROGRESS_TOKEN, META_TRACEPARENT, META_TRACESTATE]
hashable_json = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
traceparents = st.one_of(
    st.builds("00-{}-{}-01".format, st.text("0123456789abcdef", min_size=32, max_size=32),
              st.text("0123456789abcdef", min_size=16, max_size=16)),
    st.text(max_size=60),
)


def _read_or_refuse(name: Any, arguments: Any, meta: Any) -> None:
    try:
        call = envelope_from_tool_call(name, arguments, meta)
    except ValidationError:
        return
    assert isinstance(call, ToolCall)
    assert call.envelope.intent.name == name
    assert all(type(k) is str and type(v) is str for k, v in call.headers.items())


@FAST
@given(st.text(max_size=20) | json_values, st.none() | json_objects | json_values,
       st.none() | st.dictionaries(st.sampled_from(META_KEYS) | st.text(max_size=10),
                                   hashable_json | traceparents, max_size=5))
def test_tool_call_params_are_read_or_refused(name: Any, arguments: Any, meta: Any) -> None:
    _read_or_refuse(name, arguments, meta)


@FAST
@given(st.lists(json_values, max_size=2) | json_objects)
@example([])
def test_an_unhashable_priority_is_a_validation_error(priority: Any) -> None:
    _read_or_refuse("echo", {}, {META_PRIORITY: priority})


@FAST
@given(traceparents)
def test_traceparent_gives_a_trace_id_or_none(text: str) -> None:
    trace_id = trace_id_from_traceparent(text)
    assert trace_id is None or (len(trace_id) == 36 and traceparent_for(trace_id) is not None)


@FAST
@given(st.uuids().map(str))
def test_trace_ids_round_trip_through_traceparent(trace_id: str) -> None:
    traceparent = traceparent_for(trace_id)
    if trace_id.replace("-", "") == "0" * 32:
        assert traceparent is None
    else:
        assert traceparent is not None and trace_id_from_traceparent(traceparent) == trace_id


tool_results = st.fixed_dictionaries({}, optional={
    "content": json_values | st.lists(st.fixed_dictionaries(
        {"type": st.just("text") | json_values, "text": st.text(max_size=20) | json_values}),
        max_size=3),
    "structuredContent": json_values | json_objects | st.fixed_dictionaries({"error": st.one_of(
        json_values, st.fixed_dictionaries({
            "code": st.sampled_from([c.value for c in ErrorCode]) | json_values,
            "message": st.text(max_size=20) | json_values,
            "retryable": json_values, "details": json_values}))}),
    "isError": st.just(True) | json_values,
})


@FAST
@given(tool_results, st.integers(-33000, 0), st.text(max_size=20), json_values)
def test_tool_results_and_jsonrpc_errors_become_responses(
    result: dict[str, Any], code: int, message: str, data: Any
) -> None:
    response = response_from_tool_result(result, tool="t")
    assert isinstance(response, AgentResponse)
    assert (response.error is not None) == (result.get("isError") is True)
    failure = response_from_jsonrpc_error(code, message, data, tool="t")
    assert failure.error is not None


errors = st.builds(
    ErrorInfo,
    st.sampled_from([c for c in ErrorCode if c not in PROTOCOL_ERROR_CODES]),
    st.text(max_size=100), st.booleans(), json_objects)


@FAST
@given(st.none() | errors, json_objects)
def test_tool_results_round_trip(error: ErrorInfo | None, payload: dict[str, Any]) -> None:
    sent = (AgentResponse.failure(error) if error is not None
            else AgentResponse.success(payload))
    restored = response_from_tool_result(tool_result(sent, tool="t"), tool="t")
    if error is not None:
        assert restored.error == error
    else:
        assert restored.error is None and restored.payload == payload
