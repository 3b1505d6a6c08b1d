"""Well-known TransportEnvelope header names.

Headers are a flat string-to-string map; names not listed here pass through untouched.
"""

CONTENT_TYPE = "contentType"
SIGNATURE = "signature"
TRACE_ID = "traceId"
#: W3C trace context, carried so tracing spans join across transports.
TRACEPARENT = "traceparent"
#: Correlates replies with requests on multiplexed connections.
REQUEST_ID = "requestId"
#: The protocol version the responder selected.
PROTOCOL_VERSION = "protocolVersion"
#: ``"chunk"`` on the intermediate frames of a streamed reply.
STREAM = "stream"
#: Position of a chunk within a streamed reply, as a decimal string.
SEQUENCE = "seq"
#: Set to the EMCL version when the body is EMCL-sealed.
EMCL = "emcl"
#: Whole milliseconds the caller will still wait for the reply: servers stop the work then.
TIMEOUT_MS = "timeoutMs"

JSON_CONTENT_TYPE = "application/json"
STREAM_CHUNK = "chunk"
