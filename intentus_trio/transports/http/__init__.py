"""The HTTP transport: REST, JSON-RPC 2.0, long-running tasks, NDJSON/SSE streams and events.

The server is a plain ASGI application served by hypercorn's trio worker; the client is an
``httpx.AsyncClient`` with keep-alive, per-phase timeouts and a retry policy. Registered for
``http://`` and ``https://`` URLs (see ``transports/registry.py``); ``docs/transports/http.md``
describes the endpoints, options and error mapping.
"""

from .app import HttpApp, ServerLimits, ServerStats
from .client import AuthHook, HttpTransport, TaskInfo, open_client
from .retry import NO_RETRY, RetryPolicy
from .server import HttpServer, make_config, serve
from .tasks import TaskState, TaskStore
from .wire import status_for

__all__ = [
    "NO_RETRY",
    "AuthHook",
    "HttpApp",
    "HttpServer",
    "HttpTransport",
    "RetryPolicy",
    "ServerLimits",
    "ServerStats",
    "TaskInfo",
    "TaskState",
    "TaskStore",
    "make_config",
    "open_client",
    "serve",
    "status_for",
]
