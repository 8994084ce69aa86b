"""components/grpc-edge: Envoy at the edge of the gRPC API on Kubernetes, in overlays/grpc-edge
(overlays/redis with it) and overlays/keystone-grpc-edge (overlays/keystone, whose services
speak mutual TLS, with it and components/grpc-edge-mtls); tests/unit/test_k8s.py validates
their manifests. Its configuration is deploy/envoy/'s, rendered for the Services, and valid;
its pods are locked down like the services'; the network policies let callers reach Envoy and
Envoy reach the three services, and nothing more."""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import edge_drain
from tests.certs import Pki
from tests.unit.test_deploy import ENVOY, envoy_binary
from tests.unit.test_k8s import (
    CALLERS,
    GRPC_SERVICES,
    K8S,
    Doc,
    container,
    ingress_to,
    of_kind,
    rendered,
)

OVERLAY = "grpc-edge"
COMPONENT = K8S / "components" / "grpc-edge"
MOUNTED = "/etc/zaqar/envoy"
TLS_MOUNTED = "/etc/zaqar/tls"
_COMMON_FLAGS = ["--listen", "0.0.0.0:8080", "--metrics-listen", "0.0.0.0:9902",
                 "--descriptor", f"{MOUNTED}/zaqar.pb"]
# overlay -> (the component holding its envoy.yaml, render.py's flags for it: the Services'
# names and gRPC ports; with TLS, their names as the mtls component's certificate lists them)
EDGES = {
    OVERLAY: (COMPONENT, [*_COMMON_FLAGS, "--queue", "queue-svc:50061",
                          "--message", "message-svc:50062", "--notifier", "notifier-svc:50063"]),
    "keystone-grpc-edge": (K8S / "components" / "grpc-edge-mtls", [
        *_COMMON_FLAGS, "--upstream-tls", TLS_MOUNTED,
        "--queue", "queue-svc.zaqar.svc.cluster.local:50061",
        "--message", "message-svc.zaqar.svc.cluster.local:50062",
        "--notifier", "notifier-svc.zaqar.svc.cluster.local:50063"]),
}


def edge_config(docs: list[Doc]) -> Doc:
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"].startswith("zaqar-envoy-")]
    return config


@pytest.mark.parametrize("overlay", list(EDGES))
def test_the_component_holds_deploy_envoy_rendered_for_the_services(overlay: str) -> None:
    # envoy.yaml is render.py's output for the Services; zaqar.pb is the generated one
    component, flags = EDGES[overlay]
    rendered_config = subprocess.run(
        [sys.executable, str(ENVOY / "render.py"), *flags],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    assert (component / "envoy.yaml").read_text() == rendered_config, (
        f"render it again: see {component.relative_to(K8S)}/kustomization.yaml")
    assert (COMPONENT / "zaqar.pb").read_bytes() == (ENVOY / "zaqar.pb").read_bytes(), (
        "copy deploy/envoy/zaqar.pb to deploy/k8s/components/grpc-edge/")
    # And the ConfigMap the pods mount holds both, unchanged
    config = edge_config(rendered(overlay))
    assert config["metadata"]["namespace"] == "zaqar"
    assert config["data"]["envoy.yaml"] == rendered_config
    assert base64.b64decode(config["binaryData"]["zaqar.pb"]) == (ENVOY / "zaqar.pb").read_bytes()


@pytest.mark.parametrize("overlay", list(EDGES))
def test_envoy_takes_the_pods_arguments_and_mounted_config(
    overlay: str, tmp_path: Path, pki: Pki,
) -> None:
    # The ConfigMap's files and the container's arguments, as a pod has them (the mounts moved
    # to a scratch folder, as no pod is here; a certificate where the Secret zaqar-tls would
    # be), validated by the Envoy the tests run
    docs = rendered(overlay)
    config = edge_config(docs)
    (tmp_path / "zaqar.pb").write_bytes(base64.b64decode(config["binaryData"]["zaqar.pb"]))
    (tmp_path / "tls").mkdir()
    for name, source in (("tls.crt", pki.service.cert), ("tls.key", pki.service.key),
                         ("ca.crt", pki.ca)):
        shutil.copyfile(source, tmp_path / "tls" / name)
    (tmp_path / "envoy.yaml").write_text(config["data"]["envoy.yaml"].replace(
        MOUNTED, str(tmp_path)).replace(TLS_MOUNTED, str(tmp_path / "tls")))
    args = [a.replace(MOUNTED, str(tmp_path)) for a in container(
        of_kind(docs, "Deployment")["grpc-edge"], "envoy")["args"]]
    result = subprocess.run([envoy_binary(), *args, "--mode", "validate"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", list(EDGES))
def test_the_edge_pods_run_the_tested_envoy_locked_down_sized_and_probed(overlay: str) -> None:
    component, _ = EDGES[overlay]
    docs = rendered(overlay)
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {"api-gateway", "grpc-edge", *GRPC_SERVICES}
    edge = deployments["grpc-edge"]
    assert edge["metadata"]["namespace"] == "zaqar"
    assert edge["spec"]["replicas"] >= 2
    pod = edge["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["topologySpreadConstraints"]
    c = container(edge, "envoy")
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["tcpSocket"]["port"] == "grpc-api", probe
    # Prometheus scrapes its metrics listener, which the rendered envoy.yaml opens
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc-api": 8080, "metrics": 9902}
    annotations = edge["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "9902",
                           "prometheus.io/path": "/stats/prometheus"}
    listeners = {listener["name"]: listener["address"]["socket_address"] for listener in
                 yaml.safe_load((component / "envoy.yaml").read_text())[
                     "static_resources"]["listeners"]}
    assert listeners == {"grpc_api": {"address": "0.0.0.0", "port_value": 8080},
                         "metrics": {"address": "0.0.0.0", "port_value": 9902}}
    # The Envoy release the tests run
    version = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    tested = re.search(r"/(\d+\.\d+\.\d+)/", version)
    assert tested is not None, version
    assert c["image"].endswith(f"-v{tested.group(1)}"), c["image"]
    # It reads the mounted ConfigMap
    assert c["args"][:2] == ["-c", f"{MOUNTED}/envoy.yaml"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["envoy-config"] == MOUNTED and mounts["tmp"] == "/tmp"
    if overlay != OVERLAY:  # the services' TLS: the Secret zaqar-tls, readable by Envoy
        assert mounts["tls"] == TLS_MOUNTED
        tls = {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]
        assert tls["secretName"] == "zaqar-tls" and tls["defaultMode"] == 0o440
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    else:
        assert "tls" not in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["envoy-config"]["configMap"]["name"] == (
        edge_config(docs)["metadata"]["name"])
    # Its memory limit leaves room above the overload manager's heap bound
    envoy_yaml = yaml.safe_load((component / "envoy.yaml").read_text())
    monitors = {m["name"]: m["typed_config"]
                for m in envoy_yaml["overload_manager"]["resource_monitors"]}
    heap = monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"]
    assert _bytes(c["resources"]["limits"]["memory"]) > heap
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    # One worker thread per CPU of its limit (Envoy's default: one per CPU of the node)
    assert c["args"][c["args"].index("--concurrency") + 1] == c["resources"]["limits"]["cpu"]
    # And a disruption budget keeps one up, an autoscaler adds replicas on Envoy's own CPU
    budget = of_kind(docs, "PodDisruptionBudget")["grpc-edge"]
    assert budget["spec"]["minAvailable"] == 1
    scaler = of_kind(docs, "HorizontalPodAutoscaler")["grpc-edge"]["spec"]
    assert scaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "grpc-edge"}
    assert 2 <= scaler["minReplicas"] <= scaler["maxReplicas"]
    assert edge["spec"]["replicas"] == scaler["minReplicas"]
    (metric,) = scaler["metrics"]
    assert metric["type"] == "ContainerResource"
    assert {k: metric["containerResource"][k] for k in ("name", "container")} == {
        "name": "cpu", "container": "envoy"}


def drain_arguments(deployment: Doc) -> argparse.Namespace:
    """The arguments of the edge pod's container "drain", as ``zaqar-grpc edge-drain`` reads
    them."""
    c = container(deployment, "drain")
    assert c["command"] == ["zaqar-grpc"] and c["args"][0] == "edge-drain", c
    parser = argparse.ArgumentParser()
    edge_drain.add_arguments(parser)
    return parser.parse_args(c["args"][1:])


@pytest.mark.parametrize("overlay", list(EDGES))
def test_the_edge_pod_drains_envoy_before_envoy_stops(overlay: str) -> None:
    # Envoy stops at once on SIGTERM; its preStop hook waits on the container "drain", which
    # drains it through its admin API (tests/e2e/test_envoy.py runs the two as processes)
    component, _ = EDGES[overlay]
    docs = rendered(overlay)
    edge = of_kind(docs, "Deployment")["grpc-edge"]
    pod = edge["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["envoy", "drain"]
    envoy, drain = container(edge, "envoy"), container(edge, "drain")
    options = drain_arguments(edge)
    # The hook is a GET of /drained on the port "drain" listens on
    hook = envoy["lifecycle"]["preStop"]["httpGet"]
    assert hook["path"] == "/drained"
    assert options.listen == f"0.0.0.0:{hook['port']}"
    assert [p["containerPort"] for p in drain["ports"]] == [hook["port"]]
    # "drain" asks the admin API envoy.yaml opens, and counts the calls of its API listener
    config = yaml.safe_load((component / "envoy.yaml").read_text())
    admin = config["admin"]["address"]["socket_address"]
    assert options.admin == f"http://{admin['address']}:{admin['port_value']}"
    (api,) = [li for li in config["static_resources"]["listeners"] if li["name"] == "grpc_api"]
    (manager,) = [f["typed_config"] for chain in api["filter_chains"] for f in chain["filters"]
                  if f["name"] == "envoy.filters.network.http_connection_manager"]
    assert edge_drain.IN_FLIGHT_STAT == f"http.{manager['stat_prefix']}.downstream_rq_active"
    # Envoy tells every connection to go away at the drain's start, and takes new ones for as
    # long as the longest drain; the pod's grace covers it and Envoy's own stop
    args = envoy["args"]
    assert args[args.index("--drain-strategy") + 1] == "immediate"
    assert float(args[args.index("--drain-time-s") + 1]) >= options.max_drain
    assert 0 < options.min_drain <= options.max_drain
    assert pod["terminationGracePeriodSeconds"] >= options.max_drain + 5
    # It runs the services' image and tag, as the image's user, locked down like them
    services = {container(d)["image"] for name, d in of_kind(docs, "Deployment").items()
                if name != "grpc-edge"}
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (tag,) = [i["newTag"] for i in base["images"] if i["name"] == "zaqar-grpc"]
    assert services == {drain["image"]} == {f"zaqar-grpc:{tag}"}
    sc = drain["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (10001, 10001)
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert set(drain["resources"][kind]) == {"cpu", "memory"}
    # Restarted if it stops answering (tests/unit/test_edge_drain.py calls the probe's path)
    assert drain["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "drain"}
    # No network policy admits its port (test_callers_reach_envoy_... lists what they admit):
    # the kubelet reaches it from the node.


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("overlay", list(EDGES))
@pytest.mark.parametrize("target", ["grpc-edge", *GRPC_SERVICES])
def test_callers_reach_envoy_and_envoy_reaches_the_services_only(
    overlay: str, target: str,
) -> None:
    reach = ingress_to(rendered(overlay), target)
    assert reach.scraped == {"metrics"}, target  # Prometheus, on the metrics port only
    if target == "grpc-edge":
        assert reach.anyone and reach.ports == {"grpc-api"} and not reach.callers
    else:
        assert not reach.anyone, f"{target} is reachable from anywhere"
        assert reach.callers == CALLERS[target] | {"grpc-edge"}, target
        assert reach.ports == {"grpc"}, target


def test_the_edge_service_selects_the_edge_pods_only() -> None:
    docs = rendered(OVERLAY)
    service: dict[str, Any] = of_kind(docs, "Service")["grpc-edge"]
    pods = {name: d["spec"]["template"]["metadata"]["labels"]
            for name, d in of_kind(docs, "Deployment").items()}
    selected = {name for name, labels in pods.items()
                if all(labels.get(k) == v for k, v in service["spec"]["selector"].items())}
    assert selected == {"grpc-edge"}
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (8080, "grpc-api")]
