"""``bench.fuzz``'s report of several runs (``--runs``): the sum of its runs, nothing lost or
counted twice."""

from __future__ import annotations

from bench.fuzz.report import Failure, Report


def _run(seed: int, failures: int, canary: str = "ok") -> Report:
    report = Report(seed=seed, requested=10, workers=2, kept_per_signature=3)
    for case in range(10):
        report.status("http", 503 if case < failures else 200)
    for case in range(failures):
        report.add(Failure("503", "http", case, "GET /v2/queues: 503", "detail", "repro"))
    report.routes["GET /v2/queues"] += 10
    report.leak_scenarios, report.fixtures, report.seconds = 1, 5, 2.0
    report.canary = canary
    return report


def test_runs_are_summed_and_failures_kept_up_to_the_bound() -> None:
    total = Report.combined([_run(7, failures=2), _run(8, failures=0), _run(9, failures=3)])
    assert (total.seed, total.runs, total.requested, total.ran) == (7, 3, 30, 30)
    assert total.statuses["http"] == {"200": 25, "503": 5}
    # Every failure counted once, per kind and per family; at most 3 kept per signature
    assert total.failure_counts == {"503": 5}
    assert total.family_failures["http"]["503"] == 5
    assert len(total.failures) == 3
    assert not total.ok
    assert total.routes == {"GET /v2/queues": 30}
    assert (total.leak_scenarios, total.fixtures, total.seconds) == (3, 15, 6.0)
    assert total.summary().startswith(
        "seeds 7 to 9 (3 runs, each on a fresh stack and store): 30 cases of 30")


def test_a_run_whose_canary_failed_shows_in_the_sum() -> None:
    total = Report.combined([_run(1, 0), _run(2, 0, canary="no answer")])
    assert total.canary == "seed 1: ok, seed 2: no answer"
    assert not total.ok
    assert Report.combined([_run(1, 0), _run(2, 0)]).ok
