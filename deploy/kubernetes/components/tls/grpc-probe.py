"""grpc.health.v1 Check over mutual TLS, for an exec probe: the kubelet's own grpc probe speaks
plaintext only. Presents the pod's own certificate (its Secret has client auth usage) and
verifies the server's against the namespace CA, under the name the certificate carries.

    python grpc-probe.py PORT SERVICE NAME     exit 0 when SERVING, 1 otherwise
"""

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TLS = Path(os.environ.get("GRPC_PROBE_TLS_DIR", "/etc/imagesearch/tls"))
SERVING = health_pb2.HealthCheckResponse.SERVING


def check(port: str, service: str, name: str) -> bool:
    credentials = grpc.ssl_channel_credentials(
        (TLS / "ca.crt").read_bytes(), (TLS / "tls.key").read_bytes(),
        (TLS / "tls.crt").read_bytes())
    options = [("grpc.ssl_target_name_override", name)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=3)
        except grpc.RpcError as err:
            print(f"unhealthy: {err.code().name}: {err.details()}", file=sys.stderr)
            return False
    return reply.status == SERVING


if __name__ == "__main__":
    sys.exit(0 if check(*sys.argv[1:4]) else 1)
