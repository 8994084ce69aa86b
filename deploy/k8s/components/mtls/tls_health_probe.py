"""gRPC health check over mutual TLS, for exec probes: the kubelet's own grpc probe speaks
plaintext only. Usage: python tls_health_probe.py HOST:PORT SERVER_NAME TIMEOUT [SERVICE]

Reads the process's TLS files from ZAQAR_TLS_CA_FILE, ZAQAR_TLS_KEY_FILE and
ZAQAR_TLS_CERT_FILE; SERVER_NAME is a name the service's certificate carries; SERVICE is the
health service name to ask about ("" by default: readiness; "liveness": the process runs).
Exits 0 when it is SERVING, non-zero otherwise.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def read(variable: str) -> bytes:
    with open(os.environ[variable], "rb") as f:
        return f.read()


target, server_name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
service = sys.argv[4] if len(sys.argv) > 4 else ""
credentials = grpc.ssl_channel_credentials(
    read("ZAQAR_TLS_CA_FILE"), read("ZAQAR_TLS_KEY_FILE"), read("ZAQAR_TLS_CERT_FILE")
)
options = [("grpc.ssl_target_name_override", server_name)]
with grpc.secure_channel(target, credentials, options) as channel:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout
    )
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
