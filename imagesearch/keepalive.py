"""HTTP/2 keepalive pings, the same channel arguments on both sides: clients for long-lived
channels (ours to the embedder, users' to search), servers to find vanished clients
(imagesearch.serving.grpc_server.Keepalive adds what they allow clients).

A channel pings each connection every `time_s` and drops it when a ping goes unanswered for
`timeout_s`. Without this, a connection to a replica that died without closing it (node lost,
process frozen, network cut) looks healthy until TCP gives up, many minutes later, and
round_robin keeps sending it calls that only end at their deadlines; with it, that replica
leaves the rotation within time_s + timeout_s and calls go to the others.

Our servers accept pings every 5 s and more (Keepalive.min_client_interval_s); a shorter
time_s against a server left at gRPC's defaults gets GOAWAY "too_many_pings".
"""

from __future__ import annotations


def ping_options(time_s: float, timeout_s: float) -> list[tuple[str, int]]:
    return [
        ("grpc.keepalive_time_ms", int(time_s * 1000)),
        # Both: in gRPC 1.85 an unanswered keepalive ping was dropped only by the general
        # ping timeout (default 60 s), whatever keepalive_timeout said.
        ("grpc.keepalive_timeout_ms", int(timeout_s * 1000)),
        ("grpc.http2.ping_timeout_ms", int(timeout_s * 1000)),
        # Idle connections too: the next call should not be the one that finds out. (On a
        # server it also lets clients ping idle connections.)
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
