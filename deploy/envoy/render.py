"""Prints deploy/envoy/envoy.yaml with the descriptor path, addresses and client bucket of a run.

envoy.yaml names its descriptor set by the absolute path a container mounts it at
(/etc/zaqar/envoy/zaqar.pb). This script, standard library only, writes a copy for any other
place: by default its descriptor is the zaqar.pb next to this file, so the copy works from any
working directory.

    python3 deploy/envoy/render.py > /tmp/zaqar-envoy.yaml && envoy -c /tmp/zaqar-envoy.yaml
    python3 deploy/envoy/render.py --listen 0.0.0.0:8080 --queue queue:50061 \\
        --message message:50062 --notifier notifier:50063 --descriptor /srv/zaqar.pb \\
        --per-client-burst 500 --per-client-rate 200

The admin listener stays on 127.0.0.1; only its port can change. The metrics listener passes
GET /stats/prometheus to it, and nothing else.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MOUNTED_DESCRIPTOR = "/etc/zaqar/envoy/zaqar.pb"
# What each option replaces in envoy.yaml; each must occur there exactly once.
LISTEN = "{ address: 127.0.0.1, port_value: 8080 }"
METRICS = "{ address: 127.0.0.1, port_value: 9902 }"
# The admin listener's address, and the envoy_admin cluster's (the metrics listener's upstream):
# replaced in both places.
ADMIN = "{ address: 127.0.0.1, port_value: 9901 }"
ADMIN_PLACES = 2
UPSTREAMS = {
    "queue": "{ address: 127.0.0.1, port_value: 50061 }",
    "message": "{ address: 127.0.0.1, port_value: 50062 }",
    "notifier": "{ address: 127.0.0.1, port_value: 50063 }",
}


def socket_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return f'{{ address: "{host.strip("[]")}", port_value: {int(port)} }}'


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {value!r}")
    return int(value)


def positive_rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not 0 < rate < 1e9:
        raise argparse.ArgumentTypeError(f"expected requests per second above 0, got {value!r}")
    return rate


def token_bucket(burst: int, rate: float) -> str:
    """An Envoy token bucket of ``burst`` requests refilled at ``rate`` a second: whole tokens
    each second, or one token every 1 / ``rate`` seconds below one a second."""
    if rate >= 1:
        fill, interval = round(rate), "1s"
    else:
        fill, interval = 1, f"{round(1 / rate, 3)}s"
    return (f"token_bucket: {{ max_tokens: {burst}, tokens_per_fill: {fill}, "
            f"fill_interval: {interval} }}")


# Requests per client address: envoy.yaml's bucket, which the options replace.
PER_CLIENT_BURST, PER_CLIENT_RATE = 2000, 1000
PER_CLIENT = token_bucket(PER_CLIENT_BURST, PER_CLIENT_RATE)


# The clusters of the three services, each followed by its lb_policy line (where a TLS
# transport socket goes).
SERVICE_CLUSTERS = ("queue_svc", "message_svc", "notifier_svc")
CLUSTER_HEAD = "  - name: {name}\n    type: STRICT_DNS\n    lb_policy: ROUND_ROBIN\n"
UPSTREAM_TLS = """\
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
{sni}        common_tls_context:
          alpn_protocols: ["h2"]
          tls_certificates:
          - certificate_chain: {{ filename: {folder}/tls.crt }}
            private_key: {{ filename: {folder}/tls.key }}
          validation_context:
            trusted_ca: {{ filename: {folder}/ca.crt }}
            match_typed_subject_alt_names:
            - san_type: {san_type}
              matcher: {{ exact: {host} }}
"""


def with_upstream_tls(config: str, folder: str) -> str:
    """``config`` with a TLS transport socket on each service cluster: the client certificate,
    key and CA in ``folder``, and the host of the cluster's address as the server name sent
    and the subjectAltName required (an IP address or a DNS name)."""
    for name in SERVICE_CLUSTERS:
        head = CLUSTER_HEAD.format(name=name)
        if config.count(head) != 1:
            raise ValueError(f"the template should contain the cluster {name} once")
        at = config.index(head) + len(head)
        found = re.search(r'socket_address: \{ address: "?([^",]+)"?, port_value',
                          config[at:])
        if found is None:
            raise ValueError(f"the cluster {name} has no address")
        host = found.group(1)
        san_type = "IP_ADDRESS" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host) else "DNS"
        # A server name is sent for a DNS name only (SNI carries no addresses).
        sni = f"        sni: {host}\n" if san_type == "DNS" else ""
        config = config[:at] + UPSTREAM_TLS.format(
            host=host, folder=folder, san_type=san_type, sni=sni) + config[at:]
    return config


def port_number(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}")
    return int(value)


def render(template: str, replacements: dict[str, str],
           places: dict[str, int] | None = None) -> str:
    """``template`` with each key replaced by its value, all in one pass; a key that does not
    occur exactly once (or as many times as ``places`` says) is an error (the template changed
    under this script)."""
    for old in replacements:
        expected = (places or {}).get(old, 1)
        if template.count(old) != expected:
            raise ValueError(f"the template should contain {old!r} {expected} time(s)")
    if not replacements:
        return template
    pattern = re.compile("|".join(map(re.escape, replacements)))
    return pattern.sub(lambda match: replacements[match.group()], template)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=HERE / "envoy.yaml",
                        help="the configuration to render (default: envoy.yaml next to this file)")
    parser.add_argument("--descriptor", type=Path, default=HERE / "zaqar.pb",
                        help="the descriptor set (default: zaqar.pb next to this file)")
    parser.add_argument("--listen", type=socket_address, metavar="HOST:PORT",
                        help="the API listener (default 127.0.0.1:8080)")
    parser.add_argument("--admin-port", type=port_number, metavar="PORT",
                        help="the admin listener's port on 127.0.0.1 (default 9901)")
    parser.add_argument("--metrics-listen", type=socket_address, metavar="HOST:PORT",
                        help="the listener of GET /stats/prometheus (default 127.0.0.1:9902)")
    for name in UPSTREAMS:
        parser.add_argument(f"--{name}", type=socket_address, metavar="HOST:PORT",
                            help=f"the {name} service (default: envoy.yaml's)")
    parser.add_argument("--upstream-tls", type=Path, metavar="DIR",
                        help="speak TLS to the services, with DIR/tls.crt, DIR/tls.key and "
                             "DIR/ca.crt (the services' ZAQAR_TLS_* files)")
    parser.add_argument("--per-client-burst", type=positive_int, metavar="N",
                        help=f"requests one client address may make at once "
                             f"(default {PER_CLIENT_BURST})")
    parser.add_argument("--per-client-rate", type=positive_rate, metavar="R",
                        help=f"requests per second its bucket refills by "
                             f"(default {PER_CLIENT_RATE})")
    args = parser.parse_args(argv)
    replacements = {
        f"proto_descriptor: {MOUNTED_DESCRIPTOR}":
            f"proto_descriptor: {args.descriptor.resolve()}",
    }
    if args.listen:
        replacements[LISTEN] = args.listen
    if args.admin_port:
        replacements[ADMIN] = f"{{ address: 127.0.0.1, port_value: {args.admin_port} }}"
    if args.metrics_listen:
        replacements[METRICS] = args.metrics_listen
    if args.per_client_burst or args.per_client_rate:
        replacements[PER_CLIENT] = token_bucket(args.per_client_burst or PER_CLIENT_BURST,
                                                args.per_client_rate or PER_CLIENT_RATE)
    for name, old in UPSTREAMS.items():
        if getattr(args, name):
            replacements[old] = getattr(args, name)
    try:
        config = render(args.template.read_text(), replacements, {ADMIN: ADMIN_PLACES})
        if args.upstream_tls:
            config = with_upstream_tls(config, str(args.upstream_tls.absolute()))
        sys.stdout.write(config)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"render.py: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
