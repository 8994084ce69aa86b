"""services.common.affinity: the CPU lists of the ``<service>_cpus`` settings."""

from __future__ import annotations

import os

import pytest

from services.common.affinity import _spelled, cpus_of, parse_cpus
from services.common.config import ConfigurationError, Settings


@pytest.mark.parametrize(("text", "cpus"), [
    ("", set()),
    ("  ", set()),
    ("0", {0}),
    ("3", {3}),
    ("0-3", {0, 1, 2, 3}),
    ("0,2-3", {0, 2, 3}),
    (" 1 , 4-5 ", {1, 4, 5}),
    ("2-2", {2}),
    ("1,1", {1}),
])
def test_a_cpu_list_is_read_as_taskset_reads_it(text: str, cpus: set[int]) -> None:
    assert parse_cpus(text) == cpus


@pytest.mark.parametrize(("text", "why"), [
    ("a", "'a' is not a CPU number"),
    ("-1", "'-1' is not a CPU number"),
    ("1-", "'1-' is not a CPU number"),
    ("0,,1", "'' is not a CPU number"),
    ("3-1", "'3-1' is a range that ends before it starts"),
    ("0-4096", "names a CPU above 4095"),
    ("1.5", "'1.5' is not a CPU number"),
    ("\u00b2", "is not a CPU number"),
    ("0 - 1", "'0 - 1' is not a CPU number"),
])
def test_what_is_not_a_cpu_list_is_refused_saying_which_part(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_cpus(text)


@pytest.mark.parametrize(("cpus", "text"), [
    ({0}, "0"), ({0, 1, 2, 5}, "0-2,5"), ({1, 3, 4}, "1,3-4"), ({7, 8}, "7-8"),
])
def test_a_set_of_cpus_is_spelled_as_a_cpu_list(cpus: set[int], text: str) -> None:
    assert _spelled(frozenset(cpus)) == text
    assert parse_cpus(text) == cpus


def test_each_process_reads_its_own_setting() -> None:
    cpu = min(os.sched_getaffinity(0))
    settings = Settings.load(environ={}, overrides={"message_cpus": str(cpu)})
    assert cpus_of("message_svc", settings) == {cpu}
    assert cpus_of("message", settings) == {cpu}
    assert cpus_of("api_gateway", settings) == frozenset()
    assert cpus_of("up", settings) == frozenset()


def test_a_cpu_this_process_may_not_use_is_a_configuration_error() -> None:
    available = os.sched_getaffinity(0)
    beyond = max(available) + 1
    settings = Settings.load(environ={}, overrides={"gateway_cpus": f"{min(available)},{beyond}"})
    with pytest.raises(ConfigurationError) as raised:
        cpus_of("api_gateway", settings)
    assert str(raised.value) == (
        f"gateway_cpus (ZAQAR_GATEWAY_CPUS='{min(available)},{beyond}'): CPU {beyond} is not "
        f"available to this process (it may use {_spelled(frozenset(available))})."
    )


def test_a_malformed_list_is_a_configuration_error_naming_the_variable() -> None:
    settings = Settings.load(environ={}, overrides={"queue_cpus": "0-x"})
    with pytest.raises(ConfigurationError, match=r"queue_cpus \(ZAQAR_QUEUE_CPUS='0-x'\): "
                                                 r"'0-x' is not a CPU number or a range"):
        cpus_of("queue_svc", settings)
