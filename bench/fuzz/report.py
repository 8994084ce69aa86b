"""What a fuzz run found: cases and statuses per family, failures with reproducers, and the
summary table the long-run command prints."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

# Kinds of failure, each an oracle that was broken.
KINDS = ("5xx", "503", "hang", "dropped", "bad-answer", "crash", "leak", "setup", "fuzzer")


@dataclass
class Failure:
    """One broken oracle. ``reproducer`` is self-contained text; ``replay`` is what the
    engine can send again (``("http", bytes)``, ``("ws", frame, as_text)``, ``("raw", case)``
    or None)."""

    kind: str
    family: str
    case: int
    label: str
    detail: str
    reproducer: str
    replay: tuple[object, ...] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def signature(self) -> str:
        """Failures with one signature are taken to be one bug."""
        return f"{self.kind} {self.family} {self.label.split(':', 1)[0]}"


@dataclass
class Report:
    seed: int
    requested: int
    workers: int
    families: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[Failure] = field(default_factory=list)
    failure_counts: Counter[str] = field(default_factory=Counter)
    family_failures: dict[str, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter))
    routes: Counter[str] = field(default_factory=Counter)
    generic_routes: set[str] = field(default_factory=set)
    actions: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    leak_scenarios: int = 0
    fixtures: int = 0
    seconds: float = 0.0
    canary: str = ""
    dead: list[str] = field(default_factory=list)
    # Errors the stack's processes logged during the run (Python ERROR records with the
    # exception that ended their traceback, gRPC core errors), by kind.
    logged: Counter[str] = field(default_factory=Counter)
    kept_per_signature: int = 20
    # Runs summed into this report (``combined``), each on a stack of its own.
    runs: int = 1

    @classmethod
    def combined(cls, reports: Sequence[Report]) -> Report:
        """The sum of runs with consecutive seeds, as one report (``seed`` the first)."""
        first = reports[0]
        total = cls(seed=first.seed, requested=sum(r.requested for r in reports),
                    workers=first.workers, kept_per_signature=first.kept_per_signature,
                    runs=len(reports))
        for r in reports:
            total.families.update(r.families)
            for family, counts in r.statuses.items():
                total.statuses[family].update(counts)
            for failure in r.failures:
                total._keep(failure)
            total.failure_counts.update(r.failure_counts)
            for family, counts in r.family_failures.items():
                total.family_failures[family].update(counts)
            total.routes.update(r.routes)
            total.generic_routes |= r.generic_routes
            total.actions.update(r.actions)
            total.methods.update(r.methods)
            total.logged.update(r.logged)
            total.dead += r.dead
            total.leak_scenarios += r.leak_scenarios
            total.fixtures += r.fixtures
            total.seconds += r.seconds
        canaries = {r.canary for r in reports}
        total.canary = canaries.pop() if len(canaries) == 1 else ", ".join(
            f"seed {r.seed}: {r.canary}" for r in reports)
        return total

    @property
    def ran(self) -> int:
        return sum(self.families.values())

    @property
    def ok(self) -> bool:
        return not self.failure_counts and not self.dead and self.canary == "ok"

    def add(self, failure: Failure) -> None:
        self.failure_counts[failure.kind] += 1
        self.family_failures[failure.family][failure.kind] += 1
        self._keep(failure)

    def _keep(self, failure: Failure) -> None:
        """Keeps ``failure``'s detail unless ``kept_per_signature`` of its kind are kept."""
        same = sum(1 for f in self.failures if f.signature == failure.signature)
        if same < self.kept_per_signature:
            self.failures.append(failure)

    def status(self, family: str, status: int | str | None) -> None:
        self.families[family] += 1
        self.statuses[family][str(status)] += 1

    def summary(self) -> str:
        seeds = (f"seeds {self.seed} to {self.seed + self.runs - 1} ({self.runs} runs, each "
                 "on a fresh stack and store)" if self.runs > 1 else f"seed {self.seed}")
        lines = [
            f"{seeds}: {self.ran} cases of {self.requested} in {self.seconds:.1f} s "
            f"({self.ran / max(self.seconds, 1e-9):.0f} cases/s, {self.workers} workers, "
            f"{self.fixtures} fixtures, {self.leak_scenarios} leak scenarios)",
            "",
            "| family | cases | statuses | 5xx | 503 | hangs | dropped | leaks |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for family, count in sorted(self.families.items()):
            statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses[family].items()))
            k = self.family_failures[family]
            lines.append(f"| {family} | {count} | {statuses} | {k['5xx']} | {k['503']} | "
                         f"{k['hang']} | {k['dropped']} | {k['leak']} |")
        lines += [
            "",
            "failures: " + (", ".join(f"{k} {n}" for k, n in self.failure_counts.items())
                            or "none"),
            f"crashed processes: {', '.join(self.dead) or 'none'}; canary: {self.canary}",
            "errors the stack logged: " + (", ".join(
                f"{n} x {what}" for what, n in self.logged.most_common()) or "none"),
            f"routes covered: {len(self.routes)} (generic requests: "
            f"{', '.join(sorted(self.generic_routes)) or 'none'}); "
            f"WebSocket actions covered: {len(self.actions)}; "
            f"gRPC methods covered: {len(self.methods)}",
        ]
        seen: set[str] = set()
        for f in self.failures:
            if f.signature in seen:
                continue
            seen.add(f.signature)
            lines += ["", f"FAILURE {f.signature} (case {f.case}): {f.label}", f"  {f.detail}",
                      "  reproducer: " + f.reproducer.replace("\n", "\n    ")]
            lines += ["  stack output: " + line.rstrip() for line in f.log[-40:]]
        return "\n".join(lines)


# Lines may start with the name of the process that printed them: "[gateway] ".
_PREFIX = r"^(?:\[[\w-]+\] )?"
_PY_ERROR = re.compile(_PREFIX + r"\S+ \S+ (?:ERROR|CRITICAL) (\S+?):? (.*)$")
_GRPC_ERROR = re.compile(_PREFIX + r"E\d{4} [\d:.]+\s+\d+ (\S+?):\d+\] (.*)$")
_EXCEPTION = re.compile(_PREFIX + r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\w*)\b")


def logged_errors(lines: Sequence[str]) -> Counter[str]:
    """Kinds of error in a stack's output: ``<logger>: <exception type> (traceback)`` for a
    Python ERROR record with a traceback (an exception nothing handled), ``<logger>: <message
    start>`` for one without, ``grpc <file>: <message>`` for an error of gRPC's core."""
    found: Counter[str] = Counter()
    pending: str | None = None
    for line in lines:
        text = line.rstrip("\n")
        grpc_error = _GRPC_ERROR.match(text)
        python_error = _PY_ERROR.match(text)
        if grpc_error or python_error:
            if pending is not None:
                found[pending] += 1
                pending = None
            if grpc_error:
                found[f"grpc {grpc_error.group(1)}: {grpc_error.group(2)[:80]}"] += 1
            elif python_error:
                pending = f"{python_error.group(1)}: {python_error.group(2)[:60]}"
            continue
        exception = _EXCEPTION.match(text)
        if pending is not None and exception:
            found[f"{pending.split(':', 1)[0]}: {exception.group(1)} (traceback)"] += 1
            pending = None
    if pending is not None:
        found[pending] += 1
    return found
