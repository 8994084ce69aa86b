"""``bench/faults.py``: a short fault campaign under load, and its oracle.

One kill of each kind (a replica of every service, and redis-server on its AOF; on a Sentinel
group, its master and one Sentinel; a replica of message_svc and redis-server frozen) while
producers post and consumers claim and delete through two gateways: nothing acknowledged with a
201 is lost, nothing deleted comes back, and no request gets a 5xx but 503. The oracle itself
is checked on made-up tallies, so that a campaign that finds a loss is known to say so.
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import pytest

from bench.faults import CLAIM_TTL, SERVICES, Tally, campaign, parser, summarize

pytestmark = pytest.mark.e2e


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


def under_load(*argv: str) -> dict[str, Any]:
    """A short campaign (``argv``: its store and faults) with 2 producers and 2 consumers."""
    return campaign(args(*argv, "--minutes", "10", "--fault-every", "1", "--settle", "2",
                         "--producers", "2", "--consumers", "2", "--quiet"))


def assert_lost_nothing(summary: dict[str, Any], faults_by_kind: dict[str, int]) -> None:
    """The campaign drew ``faults_by_kind``, the load ran through every fault (posts were
    acknowledged after each one) and the oracle found nothing wrong."""
    report = {k: v for k, v in summary.items() if k != "fault_log"}
    assert summary["faults_by_kind"] == faults_by_kind, report
    acknowledged = [f["acknowledged_so_far"] for f in summary["fault_log"]]
    assert acknowledged == sorted(acknowledged) and acknowledged[0] > 0, report
    assert summary["acknowledged"] > acknowledged[-1], report
    assert summary["claimed"] > 0 and summary["deleted"] > 0, report
    assert summary["lost"] == 0, report
    assert summary["came_back_after_delete"] == 0, report
    assert summary["held_twice"] == 0, report
    assert summary["unexpected_count"] == 0, report
    assert summary["ok"], report


@pytest.mark.timeout(600)
def test_one_kill_of_each_kind_under_load_loses_nothing() -> None:
    # One fault of each kind on a redis-server: the services', then the store's
    summary = under_load("--faults", str(len(SERVICES) + 1), "--seed", "5")
    assert_lost_nothing(summary, {
        "gateway": 1, "message": 1, "notifier": 1, "queue": 1, "redis-server": 1})


@pytest.mark.timeout(600)
def test_a_failover_and_a_sentinel_killed_under_load_lose_nothing() -> None:
    # The stores on a Sentinel group's master (the message store with wait=1): the master
    # killed and one of its replicas promoted, and one of the three Sentinels killed
    summary = under_load("--store", "redis-sentinel", "--kinds", "redis-failover,sentinel",
                         "--faults", "2", "--seed", "7")
    assert_lost_nothing(summary, {"redis-failover": 1, "sentinel": 1})


@pytest.mark.timeout(600)
def test_a_frozen_message_svc_and_a_frozen_redis_under_load_lose_nothing() -> None:
    # SIGSTOP for longer than the gateway's deadline, then SIGCONT: a replica that hangs and
    # a store that stalls, each answering its stale calls once it runs again
    summary = under_load("--stop-with", "freeze", "--freeze-for", "6", "--kinds",
                         "message,redis", "--faults", "2", "--seed", "8")
    assert_lost_nothing(summary, {"message": 1, "redis-server (frozen)": 1})


def test_the_oracle_finds_a_lost_message_and_one_that_came_back() -> None:
    tally = Tally()
    tally.acknowledged = {
        "kept": "0:1", "consumed": "0:2", "lost": "0:3", "back": "0:4",
        "claimed-kept": "0:5", "claimed-lost": "0:6",
    }
    # Claimed, its delete refused (the claim expired): it must still be there
    tally.claimed.update(["consumed", "back", "claimed-kept", "claimed-lost"])
    tally.deleted = {"consumed", "back"}
    summary = summarize(tally, ["kept", "back", "claimed-kept"], args())
    assert (summary["lost"], summary["lost_ids"]) == (2, ["claimed-lost", "lost"])
    assert (summary["came_back_after_delete"], summary["came_back_ids"]) == (1, ["back"])
    assert not summary["ok"]


def test_the_oracle_finds_a_message_two_claims_held_at_once() -> None:
    tally = Tally()
    tally.acknowledged = {"again": "0:1", "overlap": "0:2"}
    tally.claimed.update(["again", "again", "overlap", "overlap"])
    tally.deleted = {"again", "overlap"}
    # Claimed again once the first claim had expired (its delete failed): not a failure
    tally.holds["again"] = [(1000.0, 1000.01), (1000.0 + CLAIM_TTL + 0.5, 1000.0 + CLAIM_TTL + 0.6)]
    assert summarize(tally, [], args())["ok"]
    # Claimed again while the first claim still held it (answered before its TTL was over)
    tally.holds["overlap"] = [(1000.0 + CLAIM_TTL - 2, 1000.0 + CLAIM_TTL - 1.9),
                              (1000.0, 1000.01)]
    summary = summarize(tally, [], args())
    assert (summary["held_twice"], summary["held_twice_ids"]) == (1, ["overlap"])
    assert not summary["ok"]


def test_the_oracle_passes_a_clean_tally_and_fails_on_a_5xx_but_503() -> None:
    tally = Tally()
    tally.acknowledged = {"a": "0:1", "b": "0:2"}
    tally.claimed.update(["a"])
    tally.deleted = {"a"}
    # A post stored, its answer lost, and retried: the same body under a second id
    tally.seen = {"a": "0:1", "b": "0:2", "b-first": "0:2"}
    request = httpx.Request("POST", "http://gateway/v2/queues/faults/messages")
    tally.status("post", httpx.Response(503, request=request))
    clean = summarize(tally, ["b", "b-first"], args())
    assert clean["ok"], clean
    assert (clean["stored_twice"], clean["stored_without_201"]) == (1, 1)
    tally.status("post", httpx.Response(500, request=request, text="boom"))
    summary = summarize(tally, ["b"], args())
    assert summary["unexpected"] == ["post 500 boom"] and not summary["ok"]


def test_kinds_must_be_known() -> None:
    assert args("--kinds", "redis,gateway").kinds == ("redis", "gateway")
    with pytest.raises(SystemExit):
        args("--kinds", "redis,mongod")


def test_the_oracle_says_after_which_fault_each_lost_message_was_acknowledged() -> None:
    tally = Tally()
    tally.acknowledged = {f"m{n}": f"0:{n}" for n in range(6)}
    tally.faults = [{"fault": "message.0", "acknowledged_so_far": 2, "back_after_s": 1.0},
                    {"fault": "mongodb", "acknowledged_so_far": 4, "back_after_s": 1.0}]
    # m1 before any fault, m2 and m3 after the first, m5 after the second; m4 is still there
    tally.claimed.update(["m0"])
    tally.deleted = {"m0"}
    summary = summarize(tally, ["m4"], args())
    assert summary["lost_by_fault"] == {"before any": 1, "1: message.0": 2, "2: mongodb": 1}
