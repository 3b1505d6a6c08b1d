"""The ZeroMQ transport (RFC-0007 §4.4): request/reply, worker queues and events.

* ``open_client(url, **options)`` — a DEALER client multiplexing concurrent calls and streams;
  ``subscribe``/``publish`` use the node's event hub.
* ``serve(router, url, **options)`` — a node: ROUTER request/reply (serves IntentusNet REQ
  clients too), an XPUB event hub, and with ``distribute=`` a worker-queue distributor.
* ``run_worker(router, distributor_url, **options)`` — a worker process pulling intents.

Endpoints follow from the node URL (``endpoints.py``); wire layouts are in ``wire.py``;
the trio adapter for pyzmq sockets is ``intentus_trio.transports.zmq_trio``.
"""

from .client import ClientStats, EventStream, ZmqClient, open_client
from .endpoints import endpoint
from .server import WORKERS_AGENT, ServerStats, ZmqServer, serve
from .workers import Distributor, DistributorStats, Worker, WorkerStats, run_worker

__all__ = [
    "WORKERS_AGENT",
    "ClientStats",
    "Distributor",
    "DistributorStats",
    "EventStream",
    "ServerStats",
    "Worker",
    "WorkerStats",
    "ZmqClient",
    "ZmqServer",
    "endpoint",
    "open_client",
    "run_worker",
    "serve",
]
