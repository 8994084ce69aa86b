"""Property-based run of ``docs/openapi.yaml`` against a live ``zaqar-grpc up`` (SQLite), over HTTP.

Schemathesis generates requests from the spec for every operation and checks each answer: no
5xx, a documented status code, the documented content type, a body matching the documented
schema and the documented response headers.

Size of the run: at most :data:`MAX_EXAMPLES` (40) generated examples per operation and per
generation mode (hypothesis ``max_examples``; modes: positive, and negative i.e. data that
breaks the spec, answered 4xx), plus schemathesis's coverage cases (boundary values, unexpected
methods), over the spec's 26 operations: about 2,000 requests. In that run every request
carries a valid ``Client-ID`` and the ``X-Project-ID`` of a project made for this run, so that
the cases reach the operations rather than the header checks. A second, smaller run sends the
generated (valid and invalid) tenant headers as they are, on 5 operations: about 500 requests.
Both together take ~30-45 s on two cores.

A third, stateful run follows the spec's OpenAPI ``links`` (create a queue, then post to it,
read, claim, renew, release, subscribe, confirm, delete ...): schemathesis's state machine,
:data:`STATEFUL_EXAMPLES` sequences of at most :data:`STATEFUL_STEPS` calls, derandomized,
with the same checks: about 10-20 s.
"""

from __future__ import annotations

import uuid
import zlib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.harness import Stack
from tests.stacks import up_stack

pytestmark = pytest.mark.e2e

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
MAX_EXAMPLES = 40
# One case with a valid wait in this many long-polls for 1 s (:func:`short_wait`).
LONG_POLLED = 4
CLIENT_ID = str(uuid.uuid4())
PROJECT = f"fuzz-{uuid.uuid4().hex[:12]}"

PATCH_TYPE = "application/openstack-messaging-v2.0-json-patch"

schemathesis.serializer.alias(PATCH_TYPE, "application/json")
schema = schemathesis.openapi.from_path(str(SPEC))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=MAX_EXAMPLES
)


def not_a_server_error(ctx: object, response: schemathesis.Response, case: object) -> bool:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest) -> Stack:
    return up_stack(request, "sqlite")


def short_wait(case: schemathesis.Case) -> None:
    """Long polling (``wait``, up to 20 s) is checked by tests/e2e/test_long_polling.py; here
    a valid wait (generated, or an example of the spec, given as a number or as text) is cut
    to 1 s in one case of :data:`LONG_POLLED` (chosen by the case's query, so the same each
    run), and to 0 in the others, so that a case stays within its timeout and the run does not
    spend most of its time waiting."""
    wait = (case.query or {}).get("wait")
    if isinstance(wait, bool):
        return
    try:
        seconds = int(wait) if isinstance(wait, int | str) else None
    except ValueError:
        return
    if seconds is not None and 1 <= seconds <= 20:
        chosen = zlib.crc32(repr(sorted(case.query.items())).encode()) % LONG_POLLED == 0
        case.query["wait"] = 1 if chosen else 0


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_spec_holds_against_a_live_stack(case: schemathesis.Case, live: Stack) -> None:
    short_wait(case)
    case.headers = {**(case.headers or {}), "Client-ID": CLIENT_ID, "X-Project-ID": PROJECT}
    if case.path == "/v2/health":
        case.headers["X-Roles"] = "admin"
    case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=10)


# Generated Client-ID / X-Project-ID values (valid and invalid) on a few operations that reach
# every kind of service, sent as generated: at most MAX_EXAMPLES per operation and mode.
tenant_schema = schema.include(
    operation_id=["listQueues", "postMessages", "createClaim", "listSubscriptions", "ping"]
)


@tenant_schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_generated_tenant_headers_never_fail(case: schemathesis.Case, live: Stack) -> None:
    short_wait(case)
    case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=10)


# Stateful: sequences of calls that follow the spec's links (create a queue, post to it, get,
# claim, renew and release, subscribe, confirm and delete ...), each answer checked as above.
# Positive data only, so that sequences get past the first call; admin role on every call.
STATEFUL_EXAMPLES = 25
STATEFUL_STEPS = 25
stateful_schema = schemathesis.openapi.from_path(str(SPEC))
stateful_schema.config.generation.update(modes=[GenerationMode.POSITIVE])


def test_linked_operations_hold_against_a_live_stack(live: Stack) -> None:
    class LinkedCalls(stateful_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # A project per sequence: the same calls get the same answers each time hypothesis
            # runs them (it checks that), whatever earlier sequences left in the store.
            self.project = f"stateful-{uuid.uuid4().hex[:12]}"

        def before_call(self, case: schemathesis.Case) -> None:
            short_wait(case)
            case.headers = {**(case.headers or {}), "Client-ID": CLIENT_ID,
                            "X-Project-ID": self.project, "X-Roles": "admin"}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"base_url": live.url, "timeout": 10}

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case,
            additional_checks: object = None, **kwargs: object,
        ) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    LinkedCalls.run(settings=settings(
        max_examples=STATEFUL_EXAMPLES,
        stateful_step_count=STATEFUL_STEPS,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    ))
