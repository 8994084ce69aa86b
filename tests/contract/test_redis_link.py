"""services.common.redis_link against a real redis-server, on asyncio's loop and on uvloop's
(the services run on uvloop): replies reach their own command, errors are redis-py's, a
broken connection is replaced and its unanswered commands sent once more, a timeout fails
what waits and is never resent, and nothing is ever left waiting."""

from __future__ import annotations

import asyncio
import gc
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import redis
import uvloop
from redis.exceptions import (
    AuthenticationError,
    DataError,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.redis_link import Command, Link, pack
from services.common.redis_store import RedisOptions
from services.message_svc.storage.redis._scripts import Scripts
from tests.servers import ServerProcess
from tests.waiting import until

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Runs a test's coroutine to its end on a new loop of the kind the test is for."""
    runner = LOOPS[request.param]

    def go(coro: Coroutine[Any, Any, None]) -> None:
        runner(asyncio.wait_for(coro, 30))

    return go


def options(port: int, **changes: Any) -> RedisOptions:
    return RedisOptions(store="test store", host="127.0.0.1", port=port, **changes)


def call(link: Link, *args: Any) -> asyncio.Future[Any]:
    future = asyncio.get_running_loop().create_future()
    link.send([Command(pack(args), future)])
    return future


def kill_link(port: int, name: str) -> int:
    """Close the server's side of every connection named ``name``; how many there were."""
    with redis.Redis(port=port) as admin:
        ids = [c["id"] for c in admin.client_list() if c["name"] == name]
        for client_id in ids:
            admin.execute_command("CLIENT", "KILL", "ID", client_id)
        return len(ids)


def connections(port: int, name: str) -> int:
    with redis.Redis(port=port) as admin:
        return sum(1 for c in admin.client_list() if c["name"] == name)


def test_replies_reach_their_own_commands(redis_server: ServerProcess, run: Any) -> None:
    async def main() -> None:
        link = Link(options(redis_server.port), f"link-{uuid.uuid4()}")
        key = f"link:{uuid.uuid4()}"
        try:
            # Given many callers sending in the same turn and in later ones, with an error
            # reply (INCR of a string) among them
            await call(link, "SET", f"{key}:text", "not a number")
            futures = [call(link, "INCR", key) for _ in range(200)]
            wrong = call(link, "INCR", f"{key}:text")
            later = [call(link, "INCR", key) for _ in range(50)]
            await asyncio.sleep(0)
            futures += later
            futures += [call(link, "INCR", key) for _ in range(50)]
            # Then each gets its own reply, in the order sent
            assert await asyncio.gather(*futures) == list(range(1, 301))
            # And only the command Redis refused fails, with redis-py's error
            with pytest.raises(ResponseError, match="not an integer"):
                await wrong
            assert await call(link, "GET", key) == b"300"
        finally:
            await link.close()

    run(main())


def test_error_replies_are_redis_pys_exceptions(redis_server: ServerProcess, run: Any) -> None:
    async def main() -> None:
        link = Link(options(redis_server.port), "link-errors")
        try:
            with pytest.raises(NoScriptError):
                await call(link, "EVALSHA", "0" * 40, 0)
            with pytest.raises(ResponseError, match="boom"):
                await call(link, "EVAL", "return redis.error_reply('boom')", 0)
            # A nested error stays a value of the reply, as with redis-py
            reply = await call(link, "EVAL", "return {1, redis.error_reply('inner')}", 0)
            assert reply[0] == 1 and isinstance(reply[1], ResponseError)
        finally:
            await link.close()

    run(main())


def test_a_closed_connection_is_replaced_without_an_error(
    redis_server: ServerProcess, run: Any
) -> None:
    name = f"link-{uuid.uuid4()}"

    async def main() -> None:
        link = Link(options(redis_server.port), name)
        try:
            assert await call(link, "PING") == b"PONG"
            # When the server closes the idle connection (as a restarted server has)
            assert await asyncio.to_thread(kill_link, redis_server.port, name) == 1
            await until(lambda: not link.waiting() and link._connection is None, 10,
                        "the link sees its connection closed")
            # Then the next command goes down a new connection and succeeds
            assert await call(link, "PING") == b"PONG"
            assert await asyncio.to_thread(connections, redis_server.port, name) == 1
        finally:
            await link.close()

    run(main())


def test_a_command_whose_connection_breaks_is_sent_once_more(
    redis_server: ServerProcess, run: Any
) -> None:
    name = f"link-{uuid.uuid4()}"
    key = f"link:{uuid.uuid4()}"

    async def main() -> None:
        link = Link(options(redis_server.port), name)
        admin = redis.asyncio.Redis(port=redis_server.port)
        try:
            # Given a command waiting for its reply (a blocking pop of an empty list)
            popped = call(link, "BLPOP", key, 20)
            await until(lambda: len(link.waiting()) == 1, 10, "the pop is sent")
            await until(lambda: _blocked(redis_server.port), 10, "Redis blocks the pop")
            # When its connection is closed under it
            assert await asyncio.to_thread(kill_link, redis_server.port, name) == 1
            # Then it is sent again on a new connection, and answered there
            await until(lambda: _blocked(redis_server.port), 10, "Redis blocks it again")
            await admin.rpush(key, "v")
            assert await popped == [key.encode(), b"v"]

            # And a command whose connection breaks twice fails, once
            again = call(link, "BLPOP", key, 20)
            for _ in range(2):
                await until(lambda: _blocked(redis_server.port), 10, "Redis blocks the pop")
                assert await asyncio.to_thread(kill_link, redis_server.port, name) == 1
            with pytest.raises(RedisConnectionError):
                await again
            assert await call(link, "PING") == b"PONG"
        finally:
            await admin.aclose()
            await link.close()

    run(main())


def _blocked(port: int) -> bool:
    with redis.Redis(port=port) as admin:
        return int(admin.info("clients")["blocked_clients"]) > 0


def test_a_timeout_fails_what_waits_and_is_not_resent(
    redis_server: ServerProcess, run: Any
) -> None:
    key = f"link:{uuid.uuid4()}"

    async def main() -> None:
        link = Link(options(redis_server.port, socket_timeout=0.3), f"link-{uuid.uuid4()}")
        admin = redis.asyncio.Redis(port=redis_server.port)
        try:
            # Given a command Redis does not answer in time, and one queued behind it
            slow = call(link, "BLPOP", key, 5)
            behind = call(link, "PING")
            # Then both fail with a timeout
            with pytest.raises(RedisTimeoutError):
                await slow
            with pytest.raises(RedisTimeoutError):
                await behind
            # And the timed-out command was not sent again: nothing blocks in Redis for it
            await admin.rpush(key, "kept")
            assert await admin.lrange(key, 0, -1) == [b"kept"]
            # And the next command works on a new connection
            assert await call(link, "PING") == b"PONG"
        finally:
            await admin.delete(key)
            await admin.aclose()
            await link.close()

    run(main())


def test_credentials_database_and_name(redis_server: ServerProcess, run: Any) -> None:
    user, secret, name = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, f"link-{uuid.uuid4()}"
    key = f"link:{uuid.uuid4()}"

    async def main() -> None:
        admin = redis.asyncio.Redis(port=redis_server.port)
        await admin.acl_setuser(user, enabled=True, passwords=[f"+{secret}"], keys=["*"],
                                commands=["+@all"])
        good = Link(options(redis_server.port, username=user, password=secret, db=3), name)
        bad = Link(options(redis_server.port, username=user, password="wrong"), "link-bad")
        try:
            # A link with the user's credentials and database 3
            assert await call(good, "SET", key, "in db 3") is not None
            assert await call(good, "ACL", "WHOAMI") == user.encode()
            assert await call(good, "CLIENT", "GETNAME") == name.encode()
            db3 = redis.asyncio.Redis(port=redis_server.port, db=3)
            assert await db3.get(key) == b"in db 3"
            await db3.delete(key)
            await db3.aclose()
            # A wrong password fails every command sent, with redis-py's error
            commands = [call(bad, "PING") for _ in range(3)]
            for future in commands:
                with pytest.raises(AuthenticationError):
                    await future
        finally:
            await good.close()
            await bad.close()
            await admin.acl_deluser(user)
            await admin.aclose()

    run(main())


def test_an_unreachable_server_fails_fast(run: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed

    async def main() -> None:
        link = Link(options(port), "link-nowhere")
        try:
            for _ in range(2):  # and again: a failed connect is tried anew
                with pytest.raises(RedisConnectionError, match="Error connecting"):
                    await call(link, "PING")
            assert link.waiting() == []
        finally:
            await link.close()

    run(main())


def test_close_fails_what_waits(redis_server: ServerProcess, run: Any) -> None:
    async def main() -> None:
        link = Link(options(redis_server.port), "link-close")
        waiting = call(link, "BLPOP", f"link:{uuid.uuid4()}", 20)
        await until(lambda: _blocked(redis_server.port), 10, "Redis blocks the pop")
        await link.close()
        with pytest.raises(RedisConnectionError):
            await waiting
        with pytest.raises(RedisConnectionError):
            await call(link, "PING")

    run(main())


def test_scripts_reload_once_and_refuse_bad_arguments(
    redis_server: ServerProcess, run: Any
) -> None:
    """The message store's script runner on a link: a server that lost the scripts gets them
    again, and a value Redis cannot take fails its own call only."""

    async def main() -> None:
        server = options(redis_server.port)
        client = server.client("scripts-test", decode_responses=False)
        scripts = Scripts(client, server=server, name="scripts-test")
        try:
            await scripts.load()
            stats = ["link-test:q:"]
            assert await _stats(scripts, stats) is not None
            await client.script_flush()
            # Every call of one turn meets NOSCRIPT, and is answered after one reload
            replies = await asyncio.gather(*(_stats(scripts, stats) for _ in range(20)))
            assert all(reply is not None for reply in replies)
            bad = scripts.run("stats", stats, [None])
            good = scripts.run("get", stats, ["0", "no-such-id"])
            with pytest.raises(DataError):
                await bad
            await good
        finally:
            await scripts.close()
            await client.aclose()

    run(main())


def _stats(scripts: Scripts, keys: list[str]) -> Awaitable[Any]:
    return scripts.run("stats", keys, ["0"])


def test_scripts_drain_waits_for_calls_their_callers_gave_up_on(
    redis_server: ServerProcess, run: Any
) -> None:
    """Closing the store waits for every call sent, even one whose caller stopped waiting:
    its reply is still due on the connection."""
    key = f"link:{uuid.uuid4()}"

    async def main() -> None:
        server = options(redis_server.port)
        client = server.client("drain-test", decode_responses=False)
        scripts = Scripts(client, server=server, name="drain-test")
        link = scripts._link
        assert link is not None
        admin = redis.asyncio.Redis(port=redis_server.port)
        try:
            gave_up = asyncio.get_running_loop().create_future()
            link.send([Command(pack(("BLPOP", key, 20)), gave_up)])
            await until(lambda: _blocked(redis_server.port), 10, "Redis blocks the pop")
            gave_up.cancel()
            draining = asyncio.ensure_future(scripts.drain())
            await asyncio.sleep(0.1)
            assert not draining.done()
            await admin.rpush(key, "v")
            await asyncio.wait_for(draining, 10)
            assert link.waiting() == []
        finally:
            await scripts.close()
            await client.aclose()
            await admin.delete(key)
            await admin.aclose()

    run(main())


def test_scripts_drain_without_a_link_returns_once_the_calls_are_answered(
    redis_server: ServerProcess, run: Any
) -> None:
    """Without a link (a cluster, or replicas to wait for: redis-py's pipelines), drain
    returns as soon as every call is answered, also while the task that sent them has yet to
    leave the running sends (its done callback runs a turn after its last caller is
    answered)."""

    async def main() -> None:
        server = options(redis_server.port)
        client = server.client("drain-pipelines", decode_responses=False)
        scripts = Scripts(client)
        try:
            await scripts.load()
            assert await _stats(scripts, ["link-test:q:"]) is not None
            assert scripts._sending  # the send's task: done, not yet taken out
            async with asyncio.timeout(10):  # in this task: drain starts in this turn
                await scripts.drain()
            assert not scripts._sending
        finally:
            await scripts.close()
            await client.aclose()

    run(main())


def test_a_demoted_server_sends_what_waits_to_the_server_located_now(
    run: Callable[[Coroutine[Any, Any, None]], None], tmp_path: Any,
) -> None:
    """With ``locate`` (the master Sentinels name), a READONLY reply means the server was
    demoted: the link connects to where ``locate`` says now and sends what waited again."""
    from tests.servers import redis_process

    with redis_process(tmp_path / "a") as first, redis_process(tmp_path / "b") as second:
        where = {"port": first.port}

        async def locate() -> tuple[str, int]:
            return "127.0.0.1", where["port"]

        async def body() -> None:
            link = Link(options(first.port), "zq-demoted", locate=locate)
            plain = Link(options(first.port), "zq-plain")
            try:
                assert await call(link, "SET", "k", "1") == b"OK"
                assert await call(plain, "SET", "k", "1") == b"OK"
                # When the first server becomes a replica of the second, which is now where
                # the master is
                with redis.Redis(port=first.port) as admin:
                    admin.replicaof("127.0.0.1", second.port)
                where["port"] = second.port
                # Then a write through the locating link goes to the second server
                writes = [call(link, "SET", "k", "2"), call(link, "INCR", "n")]
                assert await asyncio.gather(*writes) == [b"OK", 1]
                with redis.Redis(port=second.port) as master:
                    assert master.get("k") == b"2"
                # And a link without locate gets the error (it knows no other server)
                with pytest.raises(redis.exceptions.ReadOnlyError):
                    await call(plain, "SET", "k", "3")
            finally:
                await link.close()
                await plain.close()

        run(body())


def test_a_server_that_never_answers_the_handshake_leaves_no_error_unread(run: Any) -> None:
    # Given a server that accepts connections and never answers, and a link whose handshake
    # has two commands (SELECT, CLIENT SETNAME)
    held: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    unread: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: unread.append(context["message"]))
        accepting = loop.run_in_executor(None, lambda: held.append(listener.accept()[0]))
        link = Link(options(port, db=2, socket_timeout=0.2), "link-silent")
        try:
            # When a command waits for the handshake, which times out
            with pytest.raises(RedisTimeoutError):
                await call(link, "PING")
            await accepting
            assert link.waiting() == []
        finally:
            await link.close()
        # Then the handshake's other reply, failed with the first, was not left unread
        # (asyncio reports a failed future that nobody read when it is collected)
        gc.collect()
        await asyncio.sleep(0)

    try:
        run(main())
    finally:
        listener.close()
        for connection in held:
            connection.close()
    assert unread == []
