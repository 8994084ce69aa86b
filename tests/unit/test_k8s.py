"""The Kubernetes manifests (deploy/k8s/), without a cluster.

Every overlay renders with ``kubectl kustomize`` and passes ``kubernetes-validate --strict``;
the rendered objects hold what docs/operations.md promises (locked-down pods, probes,
resources, headless gRPC Services, targets that name those Services, NetworkPolicies that let
each service be reached by its callers only).

Then the rendered ``dev``, ``redis``, ``redis-tls``, ``redis-sentinel``, ``mongodb``, ``mtls``
and ``keystone`` overlays run as local processes, one per Deployment (replicas are a cluster's
business): each container's command, args and env exactly as rendered, on top of the image's
ENV (deploy/docker/Dockerfile), with

- every ``<service>.<namespace>.svc.cluster.local:<port>`` (and the shorter forms) mapped to
  127.0.0.1 and the local port of the container port the Service sends that port to, and a
  variable whose whole value is a container port number given that local port;
- every volume mounted by a container made a folder of its own (ConfigMap and Secret volumes
  filled with their keys), its mount path replaced by that folder in the env, command and args;
- names outside the cluster (the Redis of an overlay) mapped to the servers the test runs;
  an address left that names a Service nothing maps is a failure.

Each process waits on its probes as the manifest defines them (grpc, httpGet, exec), a smoke
test goes through the gateway's Service (ping, create a queue, post, claim), and every probe
must still pass. A manifest that is valid but wrong (a port, a name, a selector, a target, a
missing variable) fails here.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.certs import Pki, _Ca
from tests.keystone import PASSWORD as KEYSTONE_PASSWORD
from tests.keystone import Keystone
from tests.servers import (
    ServerProcess,
    free_port,
    mongodb_process,
    redis_process,
    redis_tls_client,
    start_redis_sentinel,
)
from tests.unit.test_image import (
    DOCKERFILE,
    READY_DEADLINE,
    Service,
    runtime_stage,
    smoke,
    stop_all,
    tool,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
OVERLAYS = [
    "dev", "redis", "redis-cluster", "redis-tls", "redis-sentinel", "mongodb", "keystone", "mtls"
]
NAMESPACE = "zaqar"
GRPC_SERVICES = {"queue-svc": "queue", "message-svc": "message", "notifier-svc": "notifier"}
# Who calls whom (docs/architecture.md, "Services and calls").
CALLERS = {
    "queue-svc": {"api-gateway", "message-svc", "notifier-svc"},
    "message-svc": {"api-gateway", "queue-svc", "notifier-svc"},
    "notifier-svc": {"api-gateway", "queue-svc", "message-svc"},
}
STORE_VARIABLES = {"queue-svc": "ZAQAR_QUEUE_STORE", "message-svc": "ZAQAR_MESSAGE_STORE",
                   "notifier-svc": "ZAQAR_NOTIFIER_STORE"}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|_STORE$|KEY_FILE_CONTENT")

Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: the Kubernetes tests need it (CI has it)")
    return found


@functools.cache
def rendered_text(overlay: str) -> str:
    folder = K8S / ("base" if overlay == "base" else f"overlays/{overlay}")
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {folder}:\n{result.stderr}"
    return result.stdout


def rendered(overlay: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container(deployment: Doc, name: str | None = None) -> Doc:
    """The pod's one container, or the one called ``name``."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    if name is not None:
        (named,) = [c for c in containers if c["name"] == name]
        return dict(named)
    (only,) = containers
    return dict(only)


def config_data(docs: list[Doc]) -> dict[str, dict[str, str]]:
    """ConfigMaps' and Secrets' keys and values, by (rendered, hashed) name."""
    data: dict[str, dict[str, str]] = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            data[doc["metadata"]["name"]] = dict(doc.get("data", {}))
        elif doc["kind"] == "Secret":
            values = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
            values.update(doc.get("stringData", {}))
            data[doc["metadata"]["name"]] = values
    return data


# rendering and validation --------------------------------------------------------------------


# The oldest Kubernetes docs/operations.md supports (grpc probes are GA from 1.27).
OLDEST_KUBERNETES = "1.27.0"


# (overlays/grpc-edge and keystone-grpc-edge are overlays/redis and overlays/keystone with
# Envoy: tests/unit/test_k8s_grpc_edge.py checks the rest of them.)
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS, "grpc-edge", "keystone-grpc-edge"])
def test_renders_and_passes_strict_validation(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered_text(overlay))
    # Against the newest schemas kubernetes-validate knows, and the oldest we support.
    for version in ([], ["--kubernetes-version", OLDEST_KUBERNETES]):
        result = subprocess.run(
            [tool("kubernetes-validate"), "--strict", "--quiet", *version, str(manifest)],
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down_sized_and_probed(overlay: str) -> None:
    docs = rendered(overlay)
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {"api-gateway", *GRPC_SERVICES}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["topologySpreadConstraints"], name
        c = container(deployment)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, name
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in c, f"{name} has no {probe}"
        if name == "api-gateway":
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        elif overlay in ("mtls", "keystone"):  # the kubelet's grpc probe has no TLS
            # The last argument names the health service: "liveness" stays SERVING while the
            # process runs, "" follows the store (readiness).
            for probe in ("startupProbe", "livenessProbe"):
                assert c[probe]["exec"]["command"][-1] == "liveness", (name, probe)
            assert c["readinessProbe"]["exec"]["command"][-1] != "liveness", name
        else:
            for probe in ("startupProbe", "livenessProbe"):
                assert c[probe]["grpc"]["service"] == "liveness", (name, probe)
            assert c["readinessProbe"]["grpc"].get("service", "") == "", name
        assert c["command"] == ["zaqar-grpc"], name
        assert c["args"][:1] == ["serve"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_come_from_the_configmap_and_secrets_from_secrets(overlay: str) -> None:
    docs = rendered(overlay)
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"].startswith("zaqar-config")]
    settings = config["data"]
    assert settings["ZAQAR_HOST"] == "0.0.0.0"
    # No secret in the ConfigMap: passwords, signing keys and store URIs come from Secrets.
    assert not [key for key in settings if SECRET_WORDS.search(key)]
    services = of_kind(docs, "Service")
    for variable, svc in (("ZAQAR_QUEUE_TARGET", "queue-svc"),
                          ("ZAQAR_MESSAGE_TARGETS", "message-svc"),
                          ("ZAQAR_NOTIFIER_TARGET", "notifier-svc")):
        port = services[svc]["spec"]["ports"][0]["port"]
        assert settings[variable] == f"dns:///{svc}.{NAMESPACE}.svc.cluster.local:{port}"
        assert services[svc]["metadata"]["namespace"] == NAMESPACE
    for name, deployment in of_kind(docs, "Deployment").items():
        env = {e["name"]: e for e in container(deployment).get("env", [])}
        # (a *_FILE variable names a file of a mounted Secret: a path, not a secret)
        assert not [k for k, e in env.items()
                    if SECRET_WORDS.search(k) and "value" in e and not k.endswith("_FILE")], name
        if name in STORE_VARIABLES and overlay != "dev":
            ref = env[STORE_VARIABLES[name]]["valueFrom"]["secretKeyRef"]
            assert ref["name"].startswith("zaqar-stores"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_autoscalers_and_budgets_fit_the_store(overlay: str) -> None:
    docs = rendered(overlay)
    services = of_kind(docs, "Service")
    deployments = of_kind(docs, "Deployment")
    for name in GRPC_SERVICES:
        assert services[name]["spec"]["clusterIP"] == "None", f"{name} is not headless"
    assert services["api-gateway"]["spec"].get("clusterIP") != "None"
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(
        docs, "HorizontalPodAutoscaler").values()}
    assert autoscaled <= set(deployments)
    budgets = of_kind(docs, "PodDisruptionBudget")
    if overlay == "dev":
        # SQLite: one replica of everything, replaced (not rolled) so one pod has the file.
        assert {d["spec"]["replicas"] for d in deployments.values()} == {1}
        for name in GRPC_SERVICES:
            assert deployments[name]["spec"]["strategy"] == {"type": "Recreate"}
            (volume,) = [v for v in deployments[name]["spec"]["template"]["spec"]["volumes"]
                         if v["name"] == "data"]
            assert volume == {"name": "data",
                              "persistentVolumeClaim": {"claimName": f"{name}-data"}}
        assert not autoscaled and not budgets
        assert set(of_kind(docs, "PersistentVolumeClaim")) == {
            f"{name}-data" for name in GRPC_SERVICES}
    else:
        # A shared store: every service runs replicas, autoscaled, at least one always up.
        assert autoscaled == set(deployments)
        assert set(budgets) == set(deployments)
        for name in deployments:
            assert deployments[name]["spec"]["replicas"] >= 2
            assert budgets[name]["spec"] == {"minAvailable": 1,
                                             "selector": budgets[name]["spec"]["selector"]}


# The peer of the rule that lets Prometheus scrape the services' metrics ports.
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {"In": present and value in expr.get("values", []),
              "NotIn": not present or value not in expr.get("values", []),
              "Exists": present, "DoesNotExist": not present}[expr["operator"]]
        if not ok:
            return False
    return True


@dataclass
class Ingress:
    """Who the network policies let reach a Deployment's pods."""

    anyone: bool  # a rule without "from"
    callers: set[str]  # the Deployments a podSelector peer selects
    ports: set[str]  # the ports of those rules
    scraped: set[str]  # the ports Prometheus (the namespace "monitoring") may reach


def ingress_to(docs: list[Doc], target: str) -> Ingress:
    """What the rendered network policies let reach ``target``'s pods; every pod must be
    isolated by one, and a peer is either Prometheus (on the metrics port only) or pods."""
    pods = {name: d["spec"]["template"]["metadata"]["labels"]
            for name, d in of_kind(docs, "Deployment").items()}
    applying = [p for p in of_kind(docs, "NetworkPolicy").values()
                if _selects(p["spec"]["podSelector"], pods[target])
                and "Ingress" in p["spec"]["policyTypes"]]
    assert applying, f"no policy isolates {target}"
    found = Ingress(False, set(), set(), set())
    for policy in applying:
        for rule in policy["spec"].get("ingress", []):
            rule_ports = {str(p["port"]) for p in rule.get("ports", [])}
            if not rule.get("from"):
                found.anyone = True
                found.ports |= rule_ports
            for peer in rule.get("from", []):
                if peer == MONITORING:  # Prometheus: the metrics port only
                    assert rule_ports == {"metrics"}, f"{target}: {rule}"
                    found.scraped |= rule_ports
                    continue
                assert set(peer) == {"podSelector"}, f"{target}: {peer}"
                found.callers |= {n for n, other in pods.items()
                                  if _selects(peer["podSelector"], other)}
                found.ports |= rule_ports
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_each_service_be_reached_by_its_callers_only(
    overlay: str,
) -> None:
    docs = rendered(overlay)
    for target in of_kind(docs, "Deployment"):
        reach = ingress_to(docs, target)
        named = {p["name"] for p in container(of_kind(docs, "Deployment")[target])["ports"]}
        if target == "api-gateway":
            assert reach.anyone and reach.ports == {"http", "ws"} == named
            assert not reach.scraped
        else:
            assert not reach.anyone, f"{target} is reachable from anywhere"
            assert reach.callers == CALLERS[target], target
            assert reach.ports == {"grpc"} and reach.scraped == {"metrics"}
            assert named == {"grpc", "metrics"}


@pytest.mark.parametrize("overlay", ["redis", "redis-tls", "redis-sentinel", "mongodb"])
def test_store_uris_are_ones_the_services_open(overlay: str) -> None:
    _check_store_uris(overlay)


def test_redis_cluster_store_uris_are_ones_the_services_open() -> None:
    # The queue, message and notifier stores all open the overlay's redis+cluster:// URIs.
    _check_store_uris("redis-cluster")


def _check_store_uris(overlay: str) -> None:
    from services.message_svc.storage.registry import backend_class as message_backend
    from services.notifier_svc.storage.registry import backend_class as notifier_backend
    from services.queue_svc.storage.registry import backend_class as queue_backend

    (stores,) = [v for k, v in config_data(rendered(overlay)).items()
                 if k.startswith("zaqar-stores")]
    for variable, find in (("ZAQAR_QUEUE_STORE", queue_backend),
                           ("ZAQAR_MESSAGE_STORE", message_backend),
                           ("ZAQAR_NOTIFIER_STORE", notifier_backend)):
        # The backend of the URI's scheme parses it, without I/O (a bad URI fails here).
        find(stores[variable]).from_uri(stores[variable])


# the rendered overlays as local processes ----------------------------------------------------


@dataclass
class Pod:
    """A Deployment's one container, run here: argv, env and folders as rendered and mapped."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    spec: Doc
    ports: dict[str, int] = field(default_factory=dict)  # port name or number -> local port
    annotations: dict[str, str] = field(default_factory=dict)  # of the pod template


class LocalCluster:
    """The rendered objects of an overlay, mapped onto this machine (module docstring)."""

    def __init__(self, docs: list[Doc], workdir: Path, external: dict[str, str],
                 external_secrets: dict[str, dict[str, str]]) -> None:
        self.docs = docs
        self.workdir = workdir
        self.data = {**config_data(docs), **external_secrets}
        deployments = of_kind(docs, "Deployment")
        # container port number -> local port (one process per Deployment on one host)
        self.local: dict[int, int] = {}
        for deployment in deployments.values():
            for port in container(deployment).get("ports", []):
                assert port["containerPort"] not in self.local, "two containers share a port"
                self.local[port["containerPort"]] = free_port()
        self.names = dict(external)
        for service in of_kind(docs, "Service").values():
            self._map_service(service, deployments)
        self._mounts: dict[str, dict[str, str]] = {}
        self.pods = [self._pod(name, d) for name, d in deployments.items()]

    def _map_service(self, service: Doc, deployments: dict[str, Doc]) -> None:
        name, ns = service["metadata"]["name"], service["metadata"]["namespace"]
        selected = [d for d in deployments.values()
                    if _selects({"matchLabels": service["spec"]["selector"]},
                                d["spec"]["template"]["metadata"]["labels"])]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} Deployments"
        ports = container(selected[0]).get("ports", [])
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            matches = [p["containerPort"] for p in ports
                       if target in (p.get("name"), p["containerPort"])]
            assert matches, f"Service {name} port {port['port']} reaches no container port"
            local = f"127.0.0.1:{self.local[matches[0]]}"
            for host in (f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}",
                         name):
                self.names[f"{host}:{port['port']}"] = local

    def url(self, service: str, port_name: str) -> str:
        (svc,) = [s for s in self.docs if s["kind"] == "Service"
                  and s["metadata"]["name"] == service]
        (port,) = [p for p in svc["spec"]["ports"] if p["name"] == port_name]
        return "http://" + self.names[f"{service}:{port['port']}"]

    def _pod(self, name: str, deployment: Doc) -> Pod:
        spec = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        folder = self.workdir / name
        mounts: dict[str, str] = {}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in c.get("volumeMounts", []):
            local = folder / mount["name"]
            local.mkdir(parents=True)
            self._fill(volumes[mount["name"]], local)
            mounts[mount["mountPath"]] = str(local)
        stage = runtime_stage(DOCKERFILE)
        venv_bin = str(Path(sys.executable).parent)
        env: dict[str, str] = {"HOME": str(folder)}
        for key, value in dict(stage["env"]).items():  # type: ignore[call-overload]
            env[key] = value.replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin")) \
                .replace("/opt/zaqar/bin", venv_bin)
        env.update(self._env(c))
        workdir = str(stage.get("WORKDIR", "/"))
        cwd = Path(mounts.get(workdir, str(folder)))
        pod = Pod(name, [*c.get("command", []), *c.get("args", [])], env, cwd, c,
                  annotations=deployment["spec"]["template"]["metadata"].get("annotations", {}))
        pod.env = {k: self.rewrite(v, mounts) for k, v in pod.env.items()}
        pod.argv = [self.rewrite(a, mounts) for a in pod.argv]
        pod.argv[0] = shutil.which(pod.argv[0], path=pod.env["PATH"]) or pod.argv[0]
        for port in c.get("ports", []):
            local = self.local[port["containerPort"]]
            pod.ports[str(port["containerPort"])] = local
            if "name" in port:
                pod.ports[port["name"]] = local
        self._mounts[name] = mounts
        return pod

    def _fill(self, volume: Doc, local: Path) -> None:
        source = volume.get("configMap", {}).get("name") or volume.get("secret", {}).get(
            "secretName")
        if source is None:
            return  # emptyDir, a PersistentVolumeClaim: an empty folder
        if source not in self.data and volume.get("secret", {}).get("optional"):
            return  # an optional Secret that does not exist: an empty folder
        assert source in self.data, f"volume {volume['name']}: no ConfigMap or Secret {source}"
        for key, value in self.data[source].items():
            (local / key).write_text(value)

    def _env(self, c: Doc) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in c.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            assert ref["name"] in self.data or ref.get("optional"), f"no {ref['name']}"
            env.update(self.data.get(ref["name"], {}))
        for item in c.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item["valueFrom"].get("configMapKeyRef") or item["valueFrom"].get(
                "secretKeyRef")
            value = self.data.get(ref["name"], {}).get(ref["key"])
            assert value is not None or ref.get("optional"), (
                f"{item['name']}: {ref['name']} has no key {ref['key']}")
            if value is not None:
                env[item["name"]] = value
        return env

    def rewrite(self, value: str, mounts: dict[str, str]) -> str:
        for name, local in sorted(self.names.items(), key=lambda kv: -len(kv[0])):
            value = re.sub(r"(?<![\w.-])" + re.escape(name) + r"(?![\w.-])", local, value)
        if value.isdigit() and int(value) in self.local:
            value = str(self.local[int(value)])

        def own_port(match: re.Match[str]) -> str:  # loopback: the pod's own ports
            port = int(match[2])
            return f"{match[1]}:{self.local.get(port, port)}"

        value = re.sub(r"(127\.0\.0\.1|localhost|\[::1\]):(\d+)\b", own_port, value)
        if mounts:  # a file of a mount named inside a value (a store URI's ?ssl_ca_certs=/...)
            paths = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
            value = re.sub(rf"(?<=[=,&])(?:{paths})(?=/)", lambda m: mounts[m[0]], value)
        for path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if value == path or value.startswith(path + "/"):
                value = local + value[len(path):]
                break
        # An address left in the cluster is a name nothing serves; a bare name (the TLS name
        # an exec probe checks in a certificate) is no address and stays as it is.
        unmapped = re.search(r"[\w.-]+\.svc(\.cluster\.local)?:\d+", value)
        assert unmapped is None, f"{unmapped and unmapped[0]}: no Service or server has it"
        return value

    def mounts(self, pod: Pod) -> dict[str, str]:
        return dict(self._mounts[pod.name])


# pod -> what its last failed exec probe printed (shown when a probe never passes)
LAST_EXEC_OUTPUT: dict[str, str] = {}


def probe_passes(cluster: LocalCluster, pod: Pod, probe: Doc) -> bool:
    """One try of a probe as the kubelet makes it (its timeoutSeconds included)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    if "grpc" in probe:
        port = pod.ports[str(probe["grpc"]["port"])]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
                    timeout=timeout)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    if "httpGet" in probe:
        get = probe["httpGet"]
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        url = f"http://127.0.0.1:{pod.ports[str(get['port'])]}{get['path']}"
        try:
            return 200 <= httpx.get(url, headers=headers, timeout=timeout).status_code < 400
        except httpx.TransportError:
            return False
    if "exec" in probe:
        argv = [cluster.rewrite(a, cluster.mounts(pod)) for a in probe["exec"]["command"]]
        argv[0] = shutil.which(argv[0], path=pod.env["PATH"]) or argv[0]
        try:
            result = subprocess.run(argv, env=pod.env, cwd=pod.cwd, capture_output=True,
                                    timeout=max(timeout, 30.0))
        except subprocess.TimeoutExpired:
            return False
        if result.returncode != 0:
            LAST_EXEC_OUTPUT[pod.name] = (result.stdout + result.stderr).decode(errors="replace")
        return result.returncode == 0
    raise AssertionError(f"{pod.name}: a probe of an unknown kind {probe}")


def wait_probe(cluster: LocalCluster, pod: Pod, service: Service, kind: str,
               deadline: float, passing: bool = True) -> None:
    """Tries ``kind`` until it passes (or, with ``passing`` false, until it fails)."""
    probe = pod.spec[kind]
    while probe_passes(cluster, pod, probe) != passing:
        if service.proc.poll() is not None:
            raise AssertionError(f"{pod.name} exited with {service.proc.returncode}:\n"
                                 + service.output())
        if time.monotonic() > deadline:
            raise AssertionError(f"{pod.name}: {kind} never {'passed' if passing else 'failed'}:"
                                 f"\n{service.output()}\n"
                                 + LAST_EXEC_OUTPUT.get(pod.name, ""))
        time.sleep(0.2)


Then = Callable[[LocalCluster, list[Service]], None]

# A series each process exposes once it served the smoke test's calls.
SERVED_SERIES = {"api-gateway": "zaqar_http_requests_total",
                 "queue-svc": "grpc_server_handled_total",
                 "message-svc": "grpc_server_handled_total",
                 "notifier-svc": "grpc_server_handled_total"}


def scrape_as_prometheus(pod: Pod) -> None:
    """Scrapes the pod where its ``prometheus.io/*`` annotations say, as Prometheus's
    Kubernetes discovery would: the port must be one of the container's."""
    notes = pod.annotations
    assert notes.get("prometheus.io/scrape") == "true", f"{pod.name} is not scraped"
    port = pod.ports[notes["prometheus.io/port"]]
    answer = httpx.get(f"http://127.0.0.1:{port}{notes.get('prometheus.io/path', '/metrics')}",
                       timeout=10)
    assert answer.status_code == 200, f"{pod.name}: {answer.status_code}"
    assert "process_resident_memory_bytes" in answer.text, pod.name
    assert SERVED_SERIES[pod.name] in answer.text, pod.name


def run_overlay(docs: list[Doc], workdir: Path, external: dict[str, str] | None = None,
                external_secrets: dict[str, dict[str, str]] | None = None,
                auth: httpx.Auth | None = None, then: Then | None = None) -> None:
    """Runs the overlay's Deployments, waits on their probes, smoke-tests the gateway, checks
    every probe; ``then`` runs last, while everything still runs."""
    cluster = LocalCluster(docs, workdir, external or {}, external_secrets or {})
    running: list[Service] = []
    try:
        for pod in cluster.pods:  # all at once, as a cluster starts them
            running.append(Service(pod.name, pod.argv, pod.env, pod.cwd,
                                   workdir / f"{pod.name}.log"))
        deadline = time.monotonic() + READY_DEADLINE
        for pod, service in zip(cluster.pods, running, strict=True):
            wait_probe(cluster, pod, service, "startupProbe", deadline)
            wait_probe(cluster, pod, service, "readinessProbe", deadline)
        smoke(cluster.url("api-gateway", "http"), time.monotonic() + READY_DEADLINE, auth)
        for pod in cluster.pods:
            scrape_as_prometheus(pod)
        deadline = time.monotonic() + READY_DEADLINE
        for pod, service in zip(cluster.pods, running, strict=True):
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                wait_probe(cluster, pod, service, kind, deadline)
        if then is not None:
            then(cluster, running)
    finally:
        statuses = stop_all(running)
    assert statuses == dict.fromkeys(statuses, 0), {
        s.name: s.output()[-2000:] for s in running}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ServerProcess]:
    server = redis_process(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


REDIS_NAME = "redis.redis.svc.cluster.local:6379"


@pytest.mark.timeout(300)
def test_the_dev_overlay_runs_and_its_probes_pass(tmp_path: Path) -> None:
    docs = rendered("dev")
    run_overlay(docs, tmp_path)
    # SQLite files landed in each service's own volume
    for name in GRPC_SERVICES:
        assert list((tmp_path / name / "data").glob("*.db")), name


@pytest.mark.timeout(300)
def test_the_redis_overlay_runs_and_its_probes_pass(
    tmp_path: Path, own_redis: ServerProcess
) -> None:
    def store_outage(cluster: LocalCluster, running: list[Service]) -> None:
        # When Redis goes away, every service and the gateway leave readiness while liveness
        # holds (nothing gets restarted); when it is back, they are ready again
        own_redis.stop()
        watched = list(zip(cluster.pods, running, strict=True))
        deadline = time.monotonic() + READY_DEADLINE
        for pod, service in watched:
            wait_probe(cluster, pod, service, "readinessProbe", deadline, passing=False)
            wait_probe(cluster, pod, service, "livenessProbe", deadline)
        own_redis.start()
        deadline = time.monotonic() + READY_DEADLINE
        for pod, service in watched:
            wait_probe(cluster, pod, service, "readinessProbe", deadline)

    run_overlay(rendered("redis"), tmp_path, {REDIS_NAME: f"127.0.0.1:{own_redis.port}"},
                then=store_outage)
    # Everything went to Redis: no SQLite file anywhere
    assert not list(tmp_path.rglob("*.db"))


@pytest.mark.timeout(300)
def test_the_redis_tls_overlay_runs_and_its_probes_pass(tmp_path: Path, pki: Pki) -> None:
    # Given a Redis that speaks TLS only and wants a client certificate its CA signed, and the
    # Secret an operator makes (cert-manager's keys)
    server = redis_process(tmp_path / "redis", tls=pki, auth_clients="yes")
    secret = {"ca.crt": pki.ca.read_text(), "tls.crt": pki.client.cert.read_text(),
              "tls.key": pki.client.key.read_text()}
    with server:
        run_overlay(rendered("redis-tls"), tmp_path, {REDIS_NAME: f"127.0.0.1:{server.port}"},
                    {"zaqar-redis-tls": secret})
        # Then the smoke test's messages went to that Redis, over TLS, and no store is a
        # SQLite file
        client = redis.Redis(port=server.port, **redis_tls_client(pki))
        try:
            prefixes = {key.split(b":", 1)[0] for key in client.scan_iter()}
        finally:
            client.close()
    assert b"zm" in prefixes, prefixes
    assert not list(tmp_path.rglob("*.db"))


@pytest.mark.timeout(300)
def test_the_redis_sentinel_overlay_runs_and_its_probes_pass(tmp_path: Path) -> None:
    # Given a master with a replica, watched by Sentinels named "mymaster", behind the
    # Sentinels' Service (here: one of them)
    with start_redis_sentinel(tmp_path / "sentinel", name="mymaster") as group:
        master = group.master.port
        sentinels = {"redis.redis.svc.cluster.local:26379": f"127.0.0.1:{group.sentinels[0].port}"}
        run_overlay(rendered("redis-sentinel"), tmp_path, sentinels)
        # Then the smoke test's messages are on the master
        with redis.Redis(port=master) as client:
            assert any(key.startswith(b"zm:") for key in client.scan_iter())
    assert not list(tmp_path.rglob("*.db"))


@pytest.mark.timeout(300)
def test_the_mongodb_overlay_runs_and_its_probes_pass(tmp_path: Path) -> None:
    server = mongodb_process(tmp_path / "mongodb")
    server.start()
    try:
        external = {"mongodb.mongodb.svc.cluster.local:27017": f"127.0.0.1:{server.port}"}
        run_overlay(rendered("mongodb"), tmp_path, external)
    finally:
        server.stop()
    assert not list(tmp_path.rglob("*.db"))


def tls_secret(folder: Path) -> dict[str, str]:
    """The Secret zaqar-tls an operator makes (cert-manager's keys): one certificate for the
    Services' names (what the exec probes check) and 127.0.0.1 (the targets here)."""
    ca = _Ca("zaqar-grpc k8s test CA")
    names = (*(f"{s}.{NAMESPACE}.svc.cluster.local" for s in GRPC_SERVICES), "127.0.0.1")
    folder.mkdir()
    leaf = ca.issue(folder, "zaqar", names)
    return {"tls.crt": leaf.cert.read_text(), "tls.key": leaf.key.read_text(),
            "ca.crt": ca.write(folder / "ca.crt").read_text()}


@pytest.mark.timeout(300)
def test_the_mtls_overlay_runs_and_its_probes_pass(
    tmp_path: Path, own_redis: ServerProcess
) -> None:
    run_overlay(rendered("mtls"), tmp_path, {REDIS_NAME: f"127.0.0.1:{own_redis.port}"},
                {"zaqar-tls": tls_secret(tmp_path / "pki")})


@pytest.mark.timeout(600)
def test_the_keystone_overlay_runs_and_its_probes_pass(
    tmp_path: Path, own_redis: ServerProcess, keystone: Keystone
) -> None:
    # Given the test Keystone in place of the overlay's, and the Secrets an operator makes
    url = httpx.URL(keystone.url)
    external = {REDIS_NAME: f"127.0.0.1:{own_redis.port}",
                "keystone.openstack.svc.cluster.local:5000": f"{url.host}:{url.port}"}
    secrets = {"zaqar-tls": tls_secret(tmp_path / "pki"),
               "zaqar-keystone": {"password": KEYSTONE_PASSWORD}}
    # Then it serves a caller with a token, and its probes need none
    run_overlay(rendered("keystone"), tmp_path, external, secrets, FreshToken(keystone))


class FreshToken(httpx.Auth):
    """A new token of user-a on every request."""

    def __init__(self, keystone: Keystone) -> None:
        self.keystone = keystone

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Auth-Token"] = self.keystone.token("user-a")
        yield request


def redis_overlay_with(tmp_path: Path, *lines: str) -> str:
    """The redis overlay with further lines in its kustomization, rendered from a copy of
    deploy/k8s."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    overlay = copy / "overlays/redis-with"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../redis\n" + "".join(line + "\n" for line in lines)
    )
    result = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


SIGNED_URL_FILES = "/etc/zaqar/signed-url"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_signed_url_secrets_are_files_of_an_optional_secret(overlay: str) -> None:
    """The pre-signed URL secrets reach the processes that use them (the gateway both, the
    notifier the current one for confirmation URLs, no other) as files of the optional Secret
    zaqar-signed-url, which they read again while they run, never as variables."""
    wanted = {
        "api-gateway": {"ZAQAR_SIGNED_URL_SECRET_FILE": f"{SIGNED_URL_FILES}/secret",
                        "ZAQAR_SIGNED_URL_PREVIOUS_SECRET_FILE": f"{SIGNED_URL_FILES}/previous"},
        "notifier-svc": {"ZAQAR_SIGNED_URL_SECRET_FILE": f"{SIGNED_URL_FILES}/secret"},
    }
    for name, deployment in of_kind(rendered(overlay), "Deployment").items():
        c = container(deployment)
        signing = {e["name"]: e for e in c.get("env", []) if "SIGNED_URL" in e["name"]}
        assert {k: e.get("value") for k, e in signing.items()} == wanted.get(name, {}), name
        mounts = [m for m in c.get("volumeMounts", []) if m["name"] == "signed-url"]
        volumes = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                   if v["name"] == "signed-url"]
        if name in wanted:
            # The whole Secret (no subPath: the kubelet updates it in place), readable by the
            # pod's group only
            assert mounts == [{"name": "signed-url", "mountPath": SIGNED_URL_FILES,
                               "readOnly": True}], name
            assert volumes == [{"name": "signed-url", "secret": {
                "secretName": "zaqar-signed-url", "optional": True, "defaultMode": 0o440}}]
        else:
            assert not mounts and not volumes, name


@pytest.mark.parametrize("overlay", [*OVERLAYS, "keystone-grpc-edge"])
def test_the_keystone_password_is_a_file_of_its_secret(overlay: str) -> None:
    """With Keystone, every service's process reads the service user's password from a file
    of the Secret zaqar-keystone, which it reads again while it runs (a new password needs no
    restart), never from a variable; without Keystone no pod has it."""
    keystone = overlay.startswith("keystone")
    for name, deployment in of_kind(rendered(overlay), "Deployment").items():
        containers = deployment["spec"]["template"]["spec"]["containers"]  # the edge's: two
        env = {e["name"]: e for c in containers for e in c.get("env", [])
               if "KEYSTONE_PASSWORD" in e["name"]}
        mounts = [m for c in containers for m in c.get("volumeMounts", [])
                  if m["name"] == "keystone"]
        volumes = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                   if v["name"] == "keystone"]
        if keystone and name in {"api-gateway", *STORE_VARIABLES}:
            assert env == {"ZAQAR_KEYSTONE_PASSWORD_FILE": {
                "name": "ZAQAR_KEYSTONE_PASSWORD_FILE", "value": "/etc/zaqar/keystone/password",
            }}, name
            assert mounts == [{"name": "keystone", "mountPath": "/etc/zaqar/keystone",
                               "readOnly": True}], name
            # Not optional: without the Secret the pod waits for it rather than failing
            assert volumes == [{"name": "keystone", "secret": {
                "secretName": "zaqar-keystone", "defaultMode": 0o440}}], name
        else:
            assert not env and not mounts and not volumes, name


@pytest.mark.timeout(300)
def test_the_signed_url_secret_comes_rotates_and_goes_without_a_restart(
    tmp_path: Path, own_redis: ServerProcess
) -> None:
    """The redis overlay run without the Secret zaqar-signed-url: pre-signed URLs are refused.
    Its files then change as the kubelet writes them when the Secret is created, rotated
    (docs/operations.md, "Rotating the pre-signed URL secret") and its key "previous" deleted;
    the gateway follows each step, and no process restarts."""
    text = redis_overlay_with(
        tmp_path / "render",
        "configMapGenerator:", "  - name: zaqar-config", "    behavior: merge",
        "    literals: [ZAQAR_SECRET_RELOAD_INTERVAL=0.2]",
    )
    docs = [d for d in yaml.safe_load_all(text) if d]
    project, queue = "k8s-" + uuid.uuid4().hex[:8], "shared"

    def rotate(cluster: LocalCluster, running: list[Service]) -> None:
        (gateway,) = [pod for pod in cluster.pods if pod.name == "api-gateway"]
        folder = Path(cluster.mounts(gateway)["/etc/zaqar/signed-url"])
        assert not list(folder.iterdir())  # no Secret: an empty folder
        base_url = cluster.url("api-gateway", "http")
        headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:

            # One expiry for every URL: the signature then changes with the secret only (the
            # default expiry, a day from now to the second, changes it every second).
            expires = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")

            def share() -> httpx.Response:
                return http.post(f"/v2/queues/{queue}/share",
                                 json={"methods": ["GET"], "expires": expires})

            def opens(shared: dict[str, Any]) -> bool:
                signed = {"URL-Signature": shared["signature"], "URL-Methods": "GET",
                          "URL-Paths": ",".join(shared["paths"]),
                          "URL-Expires": shared["expires"], "X-Project-ID": project,
                          "Client-ID": str(uuid.uuid4())}
                answer = httpx.get(f"{base_url}/v2/queues/{queue}/messages", headers=signed,
                                   timeout=30)
                assert answer.status_code in (200, 204, 404), answer.text
                return answer.status_code != 404

            def kubelet_writes(**keys: str) -> None:
                """The Secret's keys now (absent: deleted), as the kubelet updates a mount."""
                for key in ("secret", "previous"):
                    if key in keys:
                        (folder / f"{key}.part").write_text(keys[key])
                        (folder / f"{key}.part").replace(folder / key)
                    else:
                        (folder / key).unlink(missing_ok=True)

            def until(check: Callable[[], bool], what: str) -> None:
                deadline = time.monotonic() + READY_DEADLINE
                while not check():
                    assert time.monotonic() < deadline, what
                    time.sleep(0.1)

            assert http.put(f"/v2/queues/{queue}", json={}).status_code in (201, 204)
            # Given no Secret: pre-signed URLs are refused
            refused = share()
            assert refused.status_code == 400, refused.text
            # When the Secret is created, the gateway signs with it
            kubelet_writes(secret="first")
            until(lambda: share().status_code == 200, "the gateway still has no secret")
            first = share().json()
            assert opens(first)
            # When it is rotated (step 2: the new one signs, the old one still verifies)
            kubelet_writes(secret="second", previous="first")
            until(lambda: share().json()["signature"] != first["signature"],
                  "the gateway still signs with the first secret")
            second = share().json()
            assert opens(second) and opens(first)
            # And when the key "previous" is deleted (step 3), the old secret opens nothing
            kubelet_writes(secret="second")
            until(lambda: not opens(first), "the first secret still opens the queue")
            assert opens(second)
        assert all(service.proc.poll() is None for service in running)

    run_overlay(docs, tmp_path / "run", {REDIS_NAME: f"127.0.0.1:{own_redis.port}"},
                then=rotate)
