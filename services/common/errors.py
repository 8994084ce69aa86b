"""The error model shared by every service, translated once at each boundary.

Domain code raises a :class:`ServiceError` subclass. The server interceptor
:class:`ErrorInterceptor` (installed by ``services/common/grpc_server.py:create_server``) turns
it into a gRPC status whose ``details`` is the human description and which carries a
``google.rpc.ErrorInfo`` with a machine ``reason`` and the Zaqar error ``title``; any other
exception becomes UNAVAILABLE, logged. :func:`failure_status` is that translation, also used
for each item of a ``MessagesInternal.Batch`` call. Clients (the gateway, other services) read
it back with :func:`decode_rpc_error`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import tracing
from services.common.grpc_types import (
    Context,
    MethodHandler,
    UnaryStream,
    UnaryUnary,
    rewrapped,
    stream_within,
)
from services.common.logs import REQUEST_ID, REQUEST_ID_KEY, well_formed
from services.common.metrics import MethodCalls, code_name, server_calls

log = logging.getLogger(__name__)

ERROR_DOMAIN = "zaqar.v2"


class ServiceError(Exception):
    """Base of every error a service reports to its callers.

    Subclasses set ``code``, ``reason`` and ``title``; ``msg_format`` is formatted with the
    keyword context given at raise time.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    reason: ClassVar[str] = "INTERNAL"
    title: ClassVar[str] = "Service temporarily unavailable"
    msg_format: ClassVar[str] = "{description}"

    def __init__(self, description: str | None = None, **context: Any) -> None:
        if description is not None:
            context.setdefault("description", description)
        self.context = context
        try:
            self.description = self.msg_format.format(**context)
        except (KeyError, IndexError):
            self.description = description or self.msg_format
        super().__init__(self.description)


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"
    title = "Invalid API request"


class InvalidBody(InvalidArgument):
    reason = "INVALID_BODY"
    title = "Invalid request body"


class InvalidQueueName(InvalidArgument):
    reason = "INVALID_QUEUE_NAME"
    title = "Invalid queue identification"
    msg_format = "The format of the submitted queue name or project id is not valid."


class InvalidTopicName(InvalidArgument):
    reason = "INVALID_TOPIC_NAME"
    title = "Invalid topic identification"
    msg_format = "The format of the submitted topic name or project id is not valid."


class InvalidFlavor(InvalidArgument):
    """A flavor that cannot be defined as asked (no pools, or a pool that does not exist)."""

    reason = "INVALID_FLAVOR"
    title = "Unable to create"


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"
    title = "Not found"


class QueueNotFound(NotFound):
    reason = "QUEUE_NOT_FOUND"
    msg_format = "Queue {queue} does not exist for project {project}"


class TopicNotFound(NotFound):
    reason = "TOPIC_NOT_FOUND"
    msg_format = "Topic {topic} does not exist for project {project}"


class MessageNotFound(NotFound):
    reason = "MESSAGE_NOT_FOUND"
    msg_format = "Message {message_id} does not exist in queue {queue} for project {project}"


class ClaimNotFound(NotFound):
    reason = "CLAIM_NOT_FOUND"
    msg_format = "Claim {claim_id} does not exist in queue {queue} for project {project}"


class SubscriptionNotFound(NotFound):
    reason = "SUBSCRIPTION_NOT_FOUND"
    msg_format = "Subscription {subscription_id} does not exist"


class Conflict(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "CONFLICT"
    title = "Resource conflict"


class SubscriptionAlreadyExists(Conflict):
    reason = "SUBSCRIPTION_ALREADY_EXISTS"
    msg_format = (
        "Such subscription already exists. Subscriptions are unique by project + queue + "
        "subscriber URI."
    )


class PoolNotFound(NotFound):
    reason = "POOL_NOT_FOUND"
    msg_format = "Pool {pool} does not exist"


class FlavorNotFound(NotFound):
    reason = "FLAVOR_NOT_FOUND"
    msg_format = "Flavor {flavor} does not exist"


class PoolUriInUse(Conflict):
    """Two pools may not share a store: each URI names one pool."""

    reason = "POOL_URI_IN_USE"
    msg_format = "Pool {other} already uses the store {uri}."


class PoolHoldsQueues(Conflict):
    """A pool that queues are placed on cannot be deleted or moved to another store: their
    messages would be left behind (Zaqar deletes it and strands them)."""

    reason = "POOL_HOLDS_QUEUES"
    msg_format = (
        "Pool {pool} holds {count} queue(s); it cannot be {verb} while queues are placed on "
        "it. Delete those queues first, or set the pool's weight to 0 so that no new queue "
        "is placed on it."
    )


class PoolInUseByFlavor(ServiceError):
    """A pool that is the last one of its flavor cannot be deleted (Zaqar's 403)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "POOL_IN_USE_BY_FLAVOR"
    title = "Unable to delete"
    msg_format = "This pool is used by flavors {flavor}; It cannot be deleted."


class Overloaded(ServiceError):
    """The caller fell too far behind, or sent more than the service takes at once."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"
    title = "Too many requests"


class QuotaExceeded(ServiceError):
    """A project (or a queue) already has as many of a kind of record (queues, topics,
    subscriptions) as its quota allows (``project_max_queues``, ``project_max_topics``,
    ``queue_max_subscriptions``); see :func:`quota_exceeded`. Waiting does not help, unlike
    :class:`Overloaded`: the gateway answers it 403, as OpenStack services answer an exceeded
    quota, which Zaqar clients raise as an error (they take a 429 for a success)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUOTA_EXCEEDED"
    title = "Quota exceeded"
    msg_format = (
        "{whose} has {quota} {kind}, the most it may have ({setting}); delete one first, or "
        "ask the operator for a larger quota."
    )


def quota_exceeded(whose: str, quota: int, kind: str, setting: str) -> QuotaExceeded:
    """The error of a new record beyond ``quota``: ``whose`` names the owner ("Project p",
    "Queue q of project p"), ``kind`` the records ("queues"), ``setting`` the variable."""
    return QuotaExceeded(whose=whose, quota=quota, kind=kind, setting=setting)


class PatchConflict(ServiceError):
    """A JSON-patch replace/remove of a metadata key that is not there."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "PATCH_TARGET_ABSENT"
    title = "Resource conflict"


class MessageIsClaimed(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "MESSAGE_CLAIMED"
    title = "Unable to delete"
    msg_format = "This message is claimed; it cannot be deleted without a valid claim ID."


class MessageNotClaimedBy(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "MESSAGE_NOT_CLAIMED_BY"
    title = "Unable to delete"
    msg_format = "This message is claimed; it cannot be deleted without a valid claim ID."


class MessageNotClaimed(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "MESSAGE_NOT_CLAIMED"
    title = "Unable to delete"
    msg_format = "A claim was specified, but the message is not currently claimed."


class Unauthenticated(ServiceError):
    """A gRPC caller sent no Keystone token, or one Keystone refuses (keystone auth)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"
    title = "Unauthorized"


class Forbidden(ServiceError):
    """A valid token that does not allow the call (e.g. no service role on an internal one)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "FORBIDDEN"
    title = "Not authorized"


class Unavailable(ServiceError):
    """The store (or a service behind this one) cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "STORE_UNAVAILABLE"
    title = "Service temporarily unavailable"
    msg_format = "{description}"


class WaitsFull(Unavailable):
    """This process holds as many waiting requests (long polls, streaming pulls) as it may."""

    reason = "WAITS_FULL"


class ReceivingFull(Unavailable):
    """This process holds as many bytes of requests as it may (``grpc_max_receiving_bytes``):
    a large request is refused before its method runs, and may be sent again."""

    reason = "RECEIVING_FULL"


class Stopping(Unavailable):
    """This process is stopping: what it would hold open (a streaming pull) ends, and the
    caller opens it again, on another replica."""

    reason = "STOPPING"


@dataclass(frozen=True, slots=True)
class RpcErrorInfo:
    """What a caller learns from a failed call."""

    code: grpc.StatusCode
    reason: str
    title: str
    description: str
    # True when a service of ours gave the answer (a ``google.rpc.ErrorInfo`` of
    # :data:`ERROR_DOMAIN`); False for the channel's own failures (unreachable, deadline) and
    # for anything else that speaks gRPC.
    answered: bool = False


_CODE_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


def to_status(err: ServiceError) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason=err.reason, domain=ERROR_DOMAIN, metadata={"title": err.title}
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(
        code=err.code.value[0], message=err.description, details=[detail]
    )


def decode_rpc_error(exc: grpc.RpcError) -> RpcErrorInfo:
    """Read code, reason, title and description from a failed call (sync or aio)."""
    code: grpc.StatusCode = exc.code()
    description: str = exc.details() or ""
    reason, title, answered = code.name, "", False
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        status = None
    info = error_info(status)
    if info is not None:
        reason = info.reason or reason
        title = info.metadata.get("title", "")
        answered = info.domain == ERROR_DOMAIN
    return RpcErrorInfo(code=code, reason=reason, title=title, description=description,
                        answered=answered)


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    """The ``google.rpc.ErrorInfo`` among a rich status's details, if any."""
    for detail in () if status is None else status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


RETRY_LATER = "Please try again in a few seconds."
NOT_ANSWERED = f"A backing service did not answer. {RETRY_LATER}"
T = TypeVar("T")

# The codes with which a service judges the request itself (the caller's 4xx): passed on as
# they came by a call that asks for it (``relay=True``), because the request it carries is the
# caller's own. Every other answer becomes UNAVAILABLE.
RELAYED_CODES: Final = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})


@functools.lru_cache(maxsize=128)
def _relayed_class(code: grpc.StatusCode, reason: str, title: str) -> type[ServiceError]:
    base = Unavailable if code is grpc.StatusCode.UNAVAILABLE else ServiceError
    return type("Relayed", (base,), {"code": code, "reason": reason, "title": title})


def relayed(info: RpcErrorInfo, description: str | None = None) -> ServiceError:
    """A service's answer passed on to this service's caller: the same code, reason and title,
    with ``description`` (the answer's own by default). An UNAVAILABLE one is an
    :class:`Unavailable`, which callers may catch as such."""
    error_class = _relayed_class(info.code, info.reason, info.title)
    return error_class(info.description if description is None else description)


async def upstream_call(
    call: Awaitable[T], upstream: str, failure: str, *, relay: bool = False
) -> T:
    """Await one call to another service and classify its failure; deny by default: only
    what the upstream said itself, and said about the request, reaches the caller as it was.

    - The upstream answered UNAVAILABLE (its store, or a service behind it, is down): an
      UNAVAILABLE with its reason and title, whose description is ``failure`` followed by
      the upstream's own account.
    - The upstream judged the request (:data:`RELAYED_CODES`) and ``relay`` is set: its
      answer as it came (a 400 of queue_svc's for a name is the caller's 400). Without
      ``relay`` (the call carries no request of the caller's, e.g. a clean-up after a
      change that is already stored) such an answer means the services disagree: logged as
      an error, and UNAVAILABLE.
    - Anything else (nothing answered, a deadline, credentials refused between services, an
      unknown method during an upgrade): UNAVAILABLE with ``failure``, saying that a backing
      service did not answer; the log line names ``upstream`` (``"message_svc at
      127.0.0.1:50062"``) with the call's code and details, which the caller does not see.
    """
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        info = decode_rpc_error(exc)
        if info.answered and info.code is grpc.StatusCode.UNAVAILABLE:
            log.warning("%s: %s (%s: %s)", upstream, failure, info.reason, info.description)
            raise relayed(info, f"{failure} {info.description}") from exc
        if info.answered and info.code in RELAYED_CODES:
            if relay:
                raise relayed(info) from exc
            log.error("%s answered %s (%s: %s), which this call does not expect: %s",
                      upstream, info.code.name, info.reason, info.description, failure)
        else:
            log.warning("%s: %s (%s: %s)", upstream, failure, info.code.name, info.description)
        raise Unavailable(f"{failure} {NOT_ANSWERED}") from exc


def failure_status(exc: Exception, method: str) -> status_pb2.Status:
    """The status a call of ``method`` that raised ``exc`` answers with: the rich status of a
    :class:`ServiceError`; UNAVAILABLE (logged with its traceback) for anything else."""
    if isinstance(exc, ServiceError):
        return to_status(exc)
    # The one place an unexpected failure is turned into a status.
    log.error("unexpected failure in %s", method, exc_info=exc)
    return to_status(
        Unavailable(f"The service could not complete the request: {type(exc).__name__}")
    )


def _wrap_unary(behavior: UnaryUnary, method: str) -> UnaryUnary:
    calls = server_calls(method)

    async def wrapper(request: Any, context: Context) -> Any:
        span = (tracing.server_span(method.lstrip("/"), context.invocation_metadata() or ())
                if tracing.ENABLED else None)
        async with _Served(calls, method, context, span):
            return await behavior(request, context)

    return wrapper


def _wrap_unary_stream(behavior: UnaryStream, method: str) -> UnaryStream:
    """As :func:`_wrap_unary` for a server stream (either kind, ``stream_within``): a failure
    before or between items ends the stream with the same rich status. Not traced (a stream
    may last for hours)."""
    calls = server_calls(method)
    return stream_within(behavior, lambda request, context: _Served(calls, method, context))


class _Served:
    """One served call: its metrics, log line and span when it ends, and a failure turned
    into a rich status (:func:`failure_status`), counted before that status leaves, so that a
    caller that reads the metrics once it has its answer finds the call counted."""

    __slots__ = ("_calls", "_context", "_method", "_span", "_start")

    def __init__(self, calls: MethodCalls, method: str, context: Context,
                 span: Any = None) -> None:
        self._calls, self._method, self._context, self._span = calls, method, context, span
        self._start = time.perf_counter()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> bool:
        if isinstance(exc, grpc.aio.AbortError):
            self._done(code_name(self._context.code()))
        elif isinstance(exc, asyncio.CancelledError):
            self._done("CANCELLED")
        elif isinstance(exc, Exception) and self._context.done():
            # The call's status was settled before this failure: an abort whose status could
            # not be sent because the caller had gone (grpc raises ExecuteBatchError from
            # it). Nothing more can be sent on the call, so it is neither a failure to log
            # nor one to abort with; grpc ends the call with the abort it already holds.
            log.debug("%s ended by its caller while aborting: %s", self._method,
                      type(exc).__name__)
            self._done("CANCELLED")
            return True
        elif isinstance(exc, Exception):
            status = failure_status(exc, self._method)
            self._done(code_name(status.code))
            await self._context.abort_with_status(rpc_status.to_status(status))
        else:  # answered (or a stream closed by its reader)
            self._done("OK")
        return False

    def _done(self, code: str) -> None:
        _record(self._calls, self._method, code, self._start)
        if self._span is not None:
            self._span.end(None if code == "OK" else code, **{"rpc.grpc.status_code": code})


def _record(calls: MethodCalls, method: str, code: str, start: float) -> None:
    seconds = time.perf_counter() - start
    calls.done(code, seconds)
    log_call(method, code, seconds)


def log_call(method: str, code: str, seconds: float) -> None:
    """The debug line of one answered call (``/zaqar.v2.Messages/PostMessages OK 1.20ms``),
    also written for each item a ``Batch`` or an ``Exchange`` request carries."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s %.2fms", method, code, seconds * 1000)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Translates :class:`ServiceError` (and any unexpected exception) into a rich status.

    The wrapped handler of each method is built once and reused for every later call.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, MethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        # The caller's request id (when well formed), for the logs of this call and the calls
        # it makes. Read here rather than from context.invocation_metadata() in the method's
        # wrapper, which builds the metadata again on every call: this tuple is built already.
        # The interceptor runs in the call's own task, so the value holds while the method runs.
        request_id = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == REQUEST_ID_KEY:
                if isinstance(value, str) and well_formed(value):
                    request_id = value
                break
        REQUEST_ID.set(request_id)
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = rewrapped(handler, lambda unary: _wrap_unary(unary, method),
                            lambda stream: _wrap_unary_stream(stream, method))
        if wrapped is None:
            return handler
        self._wrapped[method] = wrapped
        return wrapped


def canonical_code_name(value: int) -> str:
    return str(code_pb2.Code.Name(value))


def status_code(value: int) -> grpc.StatusCode:
    return _CODE_BY_VALUE[value]
