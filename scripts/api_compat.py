"""Is the gRPC API still compatible with its baseline? (docs/api-compatibility.md)

The baseline, ``protos/api-baseline.binpb``, is the API as last recorded: the descriptor set
of ``protos/zaqar_grpc/v2`` (with what it imports), the same bytes as the generated
``deploy/envoy/zaqar.pb`` at the time. The current API is ``deploy/envoy/zaqar.pb`` as
``scripts/proto_codegen.sh`` makes it now. A change is compatible when:

- Buf's ``buf breaking`` finds nothing of its PACKAGE and WIRE_JSON rules: no service,
  method, message, field or enum value removed (a removed field must reserve its number and
  name), no field's number, type, cardinality, name or JSON name changed, no method's
  request or response type or streaming changed, and so on. So a client built on the
  baseline, or a replica of another service built on it during a rolling update, still
  talks to the new code, over gRPC and through a JSON transcoder;
- every method's ``google.api.http`` rule of the baseline is the same now (Buf does not look
  at options): Envoy's transcoder and grpc-gateway route REST calls by these rules.

    .venv/bin/python scripts/api_compat.py            # check; exit status 1 on a breaking change
    .venv/bin/python scripts/api_compat.py --record   # check, then record the API as the baseline
    .venv/bin/python scripts/api_compat.py --record --accept-breaking   # record it even so

A recorded baseline that differs from the current API (an addition not recorded) is what
``tests/unit/test_api_compat.py`` refuses, so every change of the API goes through this check.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "protos" / "api-baseline.binpb"
CURRENT = ROOT / "deploy" / "envoy" / "zaqar.pb"
BUF = ROOT / ".venv-tools" / "bin" / "buf"
PACKAGE = "zaqar.v2"
BUF_CONFIG = '{"version": "v2", "breaking": {"use": ["PACKAGE", "WIRE_JSON"]}}'


def descriptors(data: bytes) -> descriptor_pb2.FileDescriptorSet:
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(data)
    return files


def http_rules(files: descriptor_pb2.FileDescriptorSet) -> dict[str, http_pb2.HttpRule]:
    """Each method's ``google.api.http`` rule, by ``/package.Service/Method``, of the API's
    package only."""
    rules = {}
    for file in files.file:
        if file.package != PACKAGE:
            continue
        for service in file.service:
            for method in service.method:
                # The options were parsed before the extension was known: parse them again.
                options = descriptor_pb2.MethodOptions.FromString(
                    method.options.SerializeToString()
                )
                if options.HasExtension(annotations_pb2.http):
                    rule = options.Extensions[annotations_pb2.http]
                    rules[f"/{PACKAGE}.{service.name}/{method.name}"] = rule
    return rules


def _rule_text(rule: http_pb2.HttpRule) -> str:
    return " ".join(str(rule).split())


def http_changes(current: bytes, baseline: bytes) -> list[str]:
    """The baseline's HTTP rules that are no longer the same."""
    now = http_rules(descriptors(current))
    changes = []
    for method, rule in sorted(http_rules(descriptors(baseline)).items()):
        if method not in now:
            changes.append(f"{method}: its HTTP rule ({_rule_text(rule)}) was removed")
        elif now[method] != rule:
            changes.append(f"{method}: its HTTP rule changed from ({_rule_text(rule)}) "
                           f"to ({_rule_text(now[method])})")
    return changes


def buf_changes(current: bytes, baseline: bytes, buf: Path = BUF) -> list[str]:
    """What ``buf breaking`` reports of ``current`` against ``baseline`` (descriptor sets)."""
    if not buf.exists():
        raise FileNotFoundError(
            f"{buf} is missing: run scripts/bootstrap.sh --test (or scripts/fetch_buf.py)"
        )
    with tempfile.TemporaryDirectory() as scratch:
        new, old = Path(scratch, "current.binpb"), Path(scratch, "baseline.binpb")
        new.write_bytes(current)
        old.write_bytes(baseline)
        done = subprocess.run(
            [str(buf), "breaking", str(new), "--against", str(old), "--config", BUF_CONFIG],
            capture_output=True, text=True, timeout=120, cwd=scratch,
        )
    if done.returncode not in (0, 100):  # 100: breaking changes found
        raise RuntimeError(f"buf breaking failed ({done.returncode}): {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if line.strip()]


def breaking_changes(current: bytes, baseline: bytes, buf: Path = BUF) -> list[str]:
    """Every reason ``current`` is not compatible with ``baseline``; none when it is."""
    return buf_changes(current, baseline, buf) + http_changes(current, baseline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true",
                        help="record the current API as the baseline when it is compatible")
    parser.add_argument("--accept-breaking", action="store_true",
                        help="with --record: record it even with breaking changes")
    args = parser.parse_args()
    current, baseline = CURRENT.read_bytes(), BASELINE.read_bytes()
    changes = breaking_changes(current, baseline)
    for change in changes:
        print(change)
    if changes and not (args.record and args.accept_breaking):
        print(f"{len(changes)} breaking change(s) against {BASELINE.relative_to(ROOT)}",
              file=sys.stderr)
        return 1
    if current == baseline:
        print("the API is the baseline")
    elif args.record:
        BASELINE.write_bytes(current)
        print(f"recorded the current API in {BASELINE.relative_to(ROOT)}")
    else:
        print("compatible; the additions are not recorded yet (--record)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
