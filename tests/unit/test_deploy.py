"""Deployment files are valid for the tools that read them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2

from services.common.config import Settings
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
ENVOY = ROOT / "deploy" / "envoy"


def envoy_binary() -> str:
    for candidate in (os.environ.get("ZAQAR_TEST_ENVOY"), str(ROOT / ".venv-envoy/bin/envoy"),
                      shutil.which("envoy")):
        if candidate and Path(candidate).exists():
            return candidate
    if IN_CI:
        pytest.fail("envoy is not installed (scripts/bootstrap.sh --test installs it)")
    pytest.skip("envoy is not installed; run scripts/bootstrap.sh --test")


def render_envoy_config(target: Path, *options: str) -> Path:
    """Writes deploy/envoy/render.py's copy of envoy.yaml (``options`` are its flags) to
    ``target``, run from ``target``'s folder, not the repository."""
    rendered = subprocess.run(
        [sys.executable, str(ENVOY / "render.py"), *options],
        cwd=target.parent, capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    target.write_text(rendered)
    return target


def api_listener(config: dict[str, Any]) -> dict[str, Any]:
    """The listener of the gRPC API (the other one serves Envoy's metrics)."""
    (listener,) = [li for li in config["static_resources"]["listeners"] if li["name"] == "grpc_api"]
    return dict(listener)


def service_clusters(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The clusters of the three services (not envoy_admin, the metrics listener's upstream)."""
    return [c for c in config["static_resources"]["clusters"] if c["name"] != "envoy_admin"]


def transcoder(config: dict[str, Any]) -> dict[str, Any]:
    listener = api_listener(config)
    (manager,) = listener["filter_chains"][0]["filters"]
    filters = {f["name"]: f["typed_config"] for f in manager["typed_config"]["http_filters"]}
    options: dict[str, Any] = filters["envoy.filters.http.grpc_json_transcoder"]
    return options


def test_envoy_config_validates_from_any_directory(tmp_path: Path) -> None:
    # Given envoy.yaml rendered with the absolute path of the descriptor set, outside the repo
    config = render_envoy_config(tmp_path / "envoy.yaml")
    # When Envoy validates it from that other directory
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    # Then it is valid
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_envoy_config_renders_ports_and_keeps_admin_on_loopback(tmp_path: Path) -> None:
    # Given a copy rendered for other ports
    config = yaml.safe_load(render_envoy_config(
        tmp_path / "envoy.yaml", "--listen", "0.0.0.0:18080", "--admin-port", "19901",
        "--queue", "queue:1", "--message", "message:2", "--notifier", "notifier:3",
    ).read_text())
    # Then the listener and upstreams moved, the admin listener only changed port
    listener = api_listener(config)
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 18080}
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 19901}
    endpoints = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"]
        for c in service_clusters(config)
    }
    assert endpoints == {
        "queue_svc": {"address": "queue", "port_value": 1},
        "message_svc": {"address": "message", "port_value": 2},
        "notifier_svc": {"address": "notifier", "port_value": 3},
    }
    assert transcoder(config)["proto_descriptor"] == str(ENVOY / "zaqar.pb")


def test_envoy_config_edge_settings() -> None:
    config = yaml.safe_load((ENVOY / "envoy.yaml").read_text())
    # The descriptor is where a container mounts it; errors and unknown parameters are handled
    options = transcoder(config)
    assert options["proto_descriptor"] == "/etc/zaqar/envoy/zaqar.pb"
    assert options["convert_grpc_status"] is True
    assert options["ignore_unknown_query_parameters"] is True
    # A caller at the edge cannot pass for one of the services (whose tokens name any project)
    listener = api_listener(config)
    (manager,) = listener["filter_chains"][0]["filters"]
    (host,) = manager["typed_config"]["route_config"]["virtual_hosts"]
    assert host["request_headers_to_remove"] == ["x-service-token"]
    # The admin listener is on loopback only
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    # Edge bounds: the time to send headers, streams and buffers per connection, connections
    # and heap for the process
    options = manager["typed_config"]
    assert options["request_headers_timeout"] == "10s"
    assert options["common_http_protocol_options"]["headers_with_underscores_action"] == (
        "REJECT_REQUEST")
    assert options["http2_protocol_options"]["max_concurrent_streams"] == 100
    assert listener["per_connection_buffer_limit_bytes"] == 1 << 20
    monitors = {m["name"]: m["typed_config"]
                for m in config["overload_manager"]["resource_monitors"]}
    assert monitors["envoy.resource_monitors.global_downstream_max_connections"][
        "max_active_downstream_connections"] == 50000
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == 1 << 30
    # Every cluster health-checks its service's own name over gRPC
    checks = {
        c["name"]: [h["grpc_health_check"]["service_name"] for h in c["health_checks"]]
        for c in service_clusters(config)
    }
    assert checks == {"queue_svc": ["zaqar.v2.Queues"], "message_svc": ["zaqar.v2.Messages"],
                      "notifier_svc": ["zaqar.v2.Subscriptions"]}
    # No cluster's circuit breaker refuses before the services' own bounds and Envoy's overload
    # manager: Envoy's default (1,024 requests at once) cut long polls and streaming pulls off
    # far below what a message_svc holds
    most = max(Settings().message_max_waiting, monitors[
        "envoy.resource_monitors.global_downstream_max_connections"][
        "max_active_downstream_connections"])
    for cluster in service_clusters(config):
        (thresholds,) = cluster["circuit_breakers"]["thresholds"]
        assert thresholds["priority"] == "DEFAULT", cluster["name"]
        assert thresholds["max_requests"] >= most, cluster["name"]
        assert thresholds["max_pending_requests"] >= most, cluster["name"]


def _per_client(config: dict[str, Any]) -> dict[str, Any]:
    listener = api_listener(config)
    (manager,) = listener["filter_chains"][0]["filters"]
    names = [f["name"] for f in manager["typed_config"]["http_filters"]]
    # It runs first: REST and gRPC calls alike count before the transcoder and the router
    assert names[0] == "envoy.filters.http.local_ratelimit", names
    limit: dict[str, Any] = manager["typed_config"]["http_filters"][0]["typed_config"]
    return limit


def test_envoy_limits_requests_per_client_address() -> None:
    limit = _per_client(yaml.safe_load((ENVOY / "envoy.yaml").read_text()))
    # One bucket per client address (the connection's peer), a bounded number of them
    assert limit["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    (descriptor,) = limit["descriptors"]
    assert descriptor["entries"] == [{"key": "remote_address"}]
    assert descriptor["token_bucket"] == {
        "max_tokens": 2000, "tokens_per_fill": 1000, "fill_interval": "1s"}
    assert limit["max_dynamic_descriptors"] == 10000
    # Enforced, and told to gRPC callers as RESOURCE_EXHAUSTED with the x-ratelimit headers
    for key in ("filter_enabled", "filter_enforced"):
        assert limit[key]["default_value"] == {"numerator": 100, "denominator": "HUNDRED"}
    assert limit["rate_limited_as_resource_exhausted"] is True
    assert limit["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"


@pytest.mark.parametrize(("options", "bucket"), [
    (["--per-client-burst", "500", "--per-client-rate", "200"],
     {"max_tokens": 500, "tokens_per_fill": 200, "fill_interval": "1s"}),
    (["--per-client-rate", "0.5"],
     {"max_tokens": 2000, "tokens_per_fill": 1, "fill_interval": "2.0s"}),
    (["--per-client-burst", "3"],
     {"max_tokens": 3, "tokens_per_fill": 1000, "fill_interval": "1s"}),
])
def test_envoy_config_renders_the_per_client_bucket(
    tmp_path: Path, options: list[str], bucket: dict[str, Any]
) -> None:
    config = yaml.safe_load(render_envoy_config(tmp_path / "envoy.yaml", *options).read_text())
    (descriptor,) = _per_client(config)["descriptors"]
    assert descriptor["token_bucket"] == bucket


@pytest.mark.parametrize("option", [
    ["--per-client-burst", "0"], ["--per-client-rate", "0"], ["--per-client-rate", "fast"],
])
def test_envoy_render_refuses_a_bucket_that_is_not_one(tmp_path: Path, option: list[str]) -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        render_envoy_config(tmp_path / "envoy.yaml", *option)
    assert "expected" in refused.value.stderr


def test_envoy_metrics_listener_passes_on_the_metrics_only() -> None:
    config = yaml.safe_load((ENVOY / "envoy.yaml").read_text())
    (metrics,) = [li for li in config["static_resources"]["listeners"] if li["name"] == "metrics"]
    assert metrics["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9902}
    (manager,) = metrics["filter_chains"][0]["filters"]
    (host,) = manager["typed_config"]["route_config"]["virtual_hosts"]
    passed, refused = host["routes"]
    # GET /stats/prometheus, exactly, goes to the admin listener; anything else is a 404
    assert passed["match"] == {"path": "/stats/prometheus", "headers": [
        {"name": ":method", "string_match": {"exact": "GET"}}]}
    assert passed["route"]["cluster"] == "envoy_admin"
    assert refused["match"] == {"prefix": "/"} and refused["direct_response"]["status"] == 404
    (admin,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "envoy_admin"]
    endpoint = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == config["admin"]["address"]["socket_address"]


def test_envoy_config_renders_the_admin_port_in_both_places(tmp_path: Path) -> None:
    config = yaml.safe_load(render_envoy_config(
        tmp_path / "envoy.yaml", "--admin-port", "19901", "--metrics-listen", "0.0.0.0:19902",
    ).read_text())
    (admin,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "envoy_admin"]
    endpoint = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    (metrics,) = [li for li in config["static_resources"]["listeners"] if li["name"] == "metrics"]
    assert metrics["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 19902}


def test_envoy_config_renders_tls_to_each_service(tmp_path: Path) -> None:
    # Given a copy rendered to speak TLS to the services, one of them by name
    config = yaml.safe_load(render_envoy_config(
        tmp_path / "envoy.yaml", "--upstream-tls", "/etc/zaqar/tls",
        "--queue", "queue-svc.zaqar.svc.cluster.local:50061",
    ).read_text())
    sockets = {c["name"]: c.get("transport_socket") for c in config["static_resources"]["clusters"]}
    # Then each service's cluster presents Envoy's certificate and checks the service's against
    # the CA and the host it connects to (a DNS name also sent as the server name)
    assert sockets.pop("envoy_admin") is None
    for name, host, san_type in (
        ("queue_svc", "queue-svc.zaqar.svc.cluster.local", "DNS"),
        ("message_svc", "127.0.0.1", "IP_ADDRESS"), ("notifier_svc", "127.0.0.1", "IP_ADDRESS"),
    ):
        context = sockets[name]["typed_config"]
        common = context["common_tls_context"]
        assert common["tls_certificates"] == [{
            "certificate_chain": {"filename": "/etc/zaqar/tls/tls.crt"},
            "private_key": {"filename": "/etc/zaqar/tls/tls.key"}}]
        assert common["validation_context"] == {
            "trusted_ca": {"filename": "/etc/zaqar/tls/ca.crt"},
            "match_typed_subject_alt_names": [{"san_type": san_type,
                                               "matcher": {"exact": host}}]}
        assert common["alpn_protocols"] == ["h2"]
        assert context.get("sni") == (host if san_type == "DNS" else None), name
    # (Envoy validates such a copy with real files in tests/unit/test_k8s_grpc_edge.py and
    # runs one in front of services that require TLS in tests/e2e/test_envoy.py.)


def test_envoy_descriptor_set_holds_the_error_details() -> None:
    # The transcoder can print a status detail only if its type is in the descriptor set
    descriptors = descriptor_pb2.FileDescriptorSet()
    descriptors.ParseFromString((ENVOY / "zaqar.pb").read_bytes())
    names = {f.name for f in descriptors.file}
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto"} <= names


def test_envoy_routes_and_transcodes_every_public_service() -> None:
    # Every service of the descriptor set with google.api.http annotations, but the admin
    # ones of admin.proto, is routed to a cluster and transcoded
    from google.api import annotations_pb2

    descriptors = descriptor_pb2.FileDescriptorSet()
    descriptors.ParseFromString((ENVOY / "zaqar.pb").read_bytes())
    annotated = {
        f"{f.package}.{s.name}"
        for f in descriptors.file
        if f.name.startswith("zaqar_grpc/") and f.name != "zaqar_grpc/v2/admin.proto"
        for s in f.service
        if any(m.options.HasExtension(annotations_pb2.http) for m in s.method)
    }
    assert "zaqar.v2.Topics" in annotated
    config = yaml.safe_load((ENVOY / "envoy.yaml").read_text())
    listener = api_listener(config)
    (manager,) = listener["filter_chains"][0]["filters"]
    (host,) = manager["typed_config"]["route_config"]["virtual_hosts"]
    routed = {r["match"]["prefix"].strip("/") for r in host["routes"] if "prefix" in r["match"]}
    assert annotated <= routed
    assert annotated <= set(transcoder(config)["services"])


def test_envoy_lets_streams_and_long_polls_run_their_course() -> None:
    # Every route honours the caller's deadline; without one, a unary call has longer than the
    # longest long poll (20 s); every server-streaming method of a routed service (from the
    # descriptor set, so a new one is covered) has a route of its own with no timeout at all.
    descriptors = descriptor_pb2.FileDescriptorSet()
    descriptors.ParseFromString((ENVOY / "zaqar.pb").read_bytes())
    config = yaml.safe_load((ENVOY / "envoy.yaml").read_text())
    listener = api_listener(config)
    (manager,) = listener["filter_chains"][0]["filters"]
    (host,) = manager["typed_config"]["route_config"]["virtual_hosts"]
    routes = host["routes"]
    prefixes = {r["match"]["prefix"].strip("/") for r in routes if "prefix" in r["match"]}
    streaming = {
        f"/{f.package}.{s.name}/{m.name}"
        for f in descriptors.file if f.name.startswith("zaqar_grpc/")
        for s in f.service if f"{f.package}.{s.name}" in prefixes
        for m in s.method if m.server_streaming
    }
    assert "/zaqar.v2.Messages/StreamingPull" in streaming
    for route in routes:
        action = route["route"]
        assert action["max_stream_duration"] == {"grpc_timeout_header_max": "0s"}, route
        path = route["match"].get("path")
        if path in streaming:
            assert action["timeout"] == "0s" and action["idle_timeout"] == "0s", route
        else:
            assert "prefix" in route["match"], route
            assert int(action["timeout"].removesuffix("s")) > 20, route
    by_path = [r["match"].get("path") for r in routes]
    # Each stream's own route comes before the prefix route that would take it
    assert set(by_path[:len(streaming)]) == streaming
    keepalive = manager["typed_config"]["http2_protocol_options"]["connection_keepalive"]
    assert keepalive == {"interval": "60s", "timeout": "20s"}
