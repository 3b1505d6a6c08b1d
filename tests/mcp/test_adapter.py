"""The MCP format adapter and tool catalogue: plain JSON, no MCP SDK needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from intentus_trio import (
    AgentResponse,
    AgentTimeout,
    CapabilityNotFound,
    ErrorCode,
    ErrorInfo,
    Router,
    StreamChunk,
    ValidationError,
    new_intent,
)
from intentus_trio.mcp.adapter import (
    CONNECTION_CLOSED,
    INVALID_PARAMS,
    REQUEST_TIMEOUT,
    McpProtocolError,
    envelope_from_tool_call,
    exception_result,
    progress_of,
    response_from_jsonrpc_error,
    response_from_tool_result,
    tool_call_params,
    tool_result,
    trace_id_from_traceparent,
    traceparent_for,
)
from intentus_trio.mcp.catalog import listed, tool_specs
from intentus_trio.samples import register_samples

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_tool_call_becomes_an_envelope() -> None:
    call = envelope_from_tool_call(
        "upper", {"text": "hi"},
        {"progressToken": 7, "traceparent": TRACEPARENT, "tracestate": "a=b",
         "intentus/targetAgent": "shout", "intentus/priority": "high",
         "intentus/intentVersion": "2.0"},
        source="mcp:desktop",
    )
    env = call.envelope
    assert env.intent.name == "upper" and env.intent.version == "2.0"
    assert env.payload == {"text": "hi"}
    assert env.metadata.trace_id == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    assert env.routing.target_agent == "shout"
    assert env.context.priority == "high" and env.context.source_agent == "mcp:desktop"
    assert call.progress_token == 7
    assert call.headers == {"traceparent": TRACEPARENT, "tracestate": "a=b",
                            "mcpProgressToken": "7"}


def test_explicit_trace_id_wins_and_missing_arguments_are_empty() -> None:
    call = envelope_from_tool_call("echo", None, {"intentus/traceId": "t-1",
                                                  "traceparent": TRACEPARENT})
    assert call.envelope.metadata.trace_id == "t-1" and call.envelope.payload == {}
    assert call.progress_token is None


@pytest.mark.parametrize(("name", "arguments", "meta", "field"), [
    ("", {}, None, "name"),
    (5, {}, None, "name"),
    ("x" * 300, {}, None, "name"),
    ("echo", [1], None, "arguments"),
    ("echo", {}, {"progressToken": 1.5}, "_meta.progressToken"),
    ("echo", {}, {"intentus/priority": "urgent"}, "_meta.intentus/priority"),
    ("echo", {}, {"intentus/targetAgent": 3}, "_meta.intentus/targetAgent"),
])
def test_malformed_tool_calls_are_validation_errors(
    name: object, arguments: object, meta: dict[str, object] | None, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        envelope_from_tool_call(name, arguments, meta)
    assert info.value.path == field


def test_traceparent_round_trip_and_bad_input() -> None:
    trace_id = trace_id_from_traceparent(TRACEPARENT)
    assert trace_id is not None
    again = traceparent_for(trace_id)
    assert again is not None and again.split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    for bad in ("", "00-xyz", "ff-" + TRACEPARENT[3:], "00-" + "0" * 32 + "-00f067aa0ba902b7-01"):
        assert trace_id_from_traceparent(bad) is None
    assert traceparent_for("not-a-hex-id") is None


def test_client_params_carry_trace_context() -> None:
    env = new_intent("sdk.add", {"a": 1}, trace_id="4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
    params = tool_call_params(env, tool="add", progress_token="p")
    assert params["name"] == "add" and params["arguments"] == {"a": 1}
    meta = params["_meta"]
    assert meta["intentus/traceId"] == env.metadata.trace_id and meta["progressToken"] == "p"
    assert trace_id_from_traceparent(meta["traceparent"]) == env.metadata.trace_id


def test_success_becomes_text_and_structured_content() -> None:
    result = tool_result(AgentResponse.success({"n": 1}, agent="a", trace_id="t"))
    assert result == {"content": [{"type": "text", "text": '{"n":1}'}],
                      "structuredContent": {"n": 1},
                      "_meta": {"intentus/traceId": "t", "intentus/agent": "a"}}
    empty = tool_result(AgentResponse.success(None))
    assert empty == {"content": [{"type": "text", "text": "null"}]}


def test_agent_failures_are_tool_execution_errors_that_round_trip() -> None:
    error = ErrorInfo(ErrorCode.AGENT_TIMEOUT, "too slow", True, {"timeout": 1.0})
    result = tool_result(AgentResponse.failure(error, agent="a", trace_id="t"))
    assert result["isError"] is True
    assert result["content"][0]["text"] == "AGENT_TIMEOUT: too slow (retryable)"
    back = response_from_tool_result(result, tool="x", agent="b", trace_id="t")
    assert back.error == error and back.metadata == {"agent": "b", "traceId": "t"}


def test_a_payload_json_cannot_hold_is_a_tool_execution_error() -> None:
    result = tool_result(AgentResponse.success({"thing": object()}, agent="a", trace_id="t"))
    assert result["isError"] is True
    assert result["content"][0]["text"].startswith("INTERNAL_AGENT_ERROR: ")
    assert result["_meta"] == {"intentus/traceId": "t", "intentus/agent": "a"}


@pytest.mark.parametrize("exc", [
    CapabilityNotFound("no agent handles intent 'zz' v1.0"),
])
def test_unknown_tools_are_jsonrpc_errors(exc: CapabilityNotFound) -> None:
    with pytest.raises(McpProtocolError) as info:
        tool_result(exc.to_response(trace_id="t"), tool="zz")
    assert info.value.code == INVALID_PARAMS and info.value.message == "Unknown tool: zz"
    back = response_from_jsonrpc_error(info.value.code, info.value.message, info.value.data,
                                       tool="zz")
    assert back.error is not None and back.error.code is ErrorCode.CAPABILITY_NOT_FOUND


def test_exception_result_for_timeouts() -> None:
    result = exception_result(AgentTimeout("late"), trace_id="t")
    assert result["isError"] is True
    assert result["structuredContent"]["error"]["code"] == "AGENT_TIMEOUT"


def test_foreign_results_and_errors() -> None:
    text_only = {"content": [{"type": "text", "text": "a"}, {"type": "image", "data": "x",
                                                          "mimeType": "image/png"},
                             {"type": "text", "text": "b"}]}
    ok = response_from_tool_result(text_only, tool="t")
    assert ok.ok and ok.payload is not None
    assert ok.payload["text"] == "a\nb" and len(ok.payload["content"]) == 3
    failed = response_from_tool_result({"content": [{"type": "text", "text": "bad"}],
                                        "isError": True}, tool="t")
    assert failed.error is not None and failed.error.code is ErrorCode.AGENT_ERROR
    assert failed.error.message == "bad" and failed.error.details == {"tool": "t"}
    bogus = response_from_tool_result({"isError": True, "structuredContent": {
        "error": {"code": "NOT_A_CODE", "message": "x"}}}, tool="t")
    assert bogus.error is not None and bogus.error.code is ErrorCode.AGENT_ERROR
    for code, expected in ((CONNECTION_CLOSED, ErrorCode.AGENT_UNAVAILABLE),
                           (REQUEST_TIMEOUT, ErrorCode.AGENT_TIMEOUT),
                           (INVALID_PARAMS, ErrorCode.VALIDATION_ERROR),
                           (-32603, ErrorCode.AGENT_ERROR)):
        response = response_from_jsonrpc_error(code, "m", None, tool="t")
        assert response.error is not None and response.error.code is expected
        assert response.error.details == {"tool": "t", "mcpCode": code}


def test_progress_of_a_chunk() -> None:
    assert progress_of(StreamChunk(0, {"i": 0})) == (1.0, '{"i":0}')


def test_catalogue_policy() -> None:
    router = register_samples(Router())

    async def handler(env: object) -> dict[str, object]:
        return {}

    router.register("math", ["math.*", "add"], handler, description="sums",
                    input_schema={"properties": {"a": {"type": "integer"}}})
    router.register("catch-all", "*", handler)
    router.register("bad-name", "has space", handler)
    router.register("echo-2", "echo", handler, description="second echo")
    specs = {spec["name"]: spec for spec in tool_specs(router.registry)}
    assert list(specs) == ["echo", "upper", "count", "sleep", "fail", "add"]
    assert specs["add"]["description"] == "sums"
    assert specs["add"]["inputSchema"] == {"properties": {"a": {"type": "integer"}},
                                           "type": "object"}
    assert specs["echo"]["_meta"] == {"intentus/agent": "echo"}  # the router's pick
    assert specs["count"]["_meta"]["intentus/streaming"] is True
    assert listed(router.registry, "add") and not listed(router.registry, "math.mul")
    assert not listed(router.registry, "*") and not listed(router.registry, "has space")


def test_importable_without_the_sdk() -> None:
    code = (
        "import sys\n"
        "for name in ('mcp', 'mcp_types', 'jsonschema', 'starlette', 'pydantic'):\n"
        "    sys.modules[name] = None\n"
        "import intentus_trio.mcp, intentus_trio.mcp.adapter, intentus_trio.mcp.catalog\n"
        "import intentus_trio.mcp.cli\n"
        "try:\n"
        "    import intentus_trio.mcp.server\n"
        "except ImportError:\n"
        "    print('server needs the SDK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "server needs the SDK"
