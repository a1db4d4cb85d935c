"""The async client after an overload burst (issue 22, item 7): once tierwise answers again, the
client must ask it again, instead of failing upward forever from a connection pool whose slots
leaked while requests were abandoned (encode/httpcore#1093).

tierwise here is a minimal HTTP/1.1 server on 127.0.0.1 in the test's own event loop, so the test
decides with events when it stalls and when it answers, and counts the /classify calls it receives.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpcore
import pytest
from tierwise.gateway.client import MAX_IN_FLIGHT, AsyncTierwiseClient

pytestmark = pytest.mark.slow  # a few seconds of overload

ANSWER = json.dumps(
    {"tier": "fast", "model": "m-fast", "fallbacks": ["m-top"], "request_id": "r", "reasons": []}
).encode()
BURST = 150  # concurrent requests, more than the client's 100 connections
MIN_BURSTS = 8  # before the fix, the client had leaked (nearly) all 100 slots after 1 to 6 bursts
MAX_BURSTS = 20
TIMEOUT_SECONDS = 0.3  # the client's deadline, overrun by every request of a burst
RECOVERY_ATTEMPTS = 50  # requests after the burst; each fails within the client's own timeout


class StallingTierwise:
    """Answers /classify with a fixed routing, or, while `stalled`, holds each request unanswered
    until `release` is set and then drops the connection (an overloaded or paused service)."""

    def __init__(self, stalled: bool) -> None:
        self.stalled = stalled
        self.release = asyncio.Event()
        self.calls = 0  # /classify requests received, answered or not
        self.held = 0  # requests received while stalled
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.calls += 1
                if self.stalled:
                    self.held += 1
                    await self.release.wait()
                    return  # drop the connection unanswered
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(ANSWER)}\r\n\r\n".encode()
                    + ANSWER
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client (or the test's shutdown) closed the connection
        finally:
            self.writers.discard(writer)
            writer.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[StallingTierwise]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self.release.set()
            server.close()
            for writer in list(self.writers):  # ends handlers still reading: EOF, not cancellation
                writer.close()
            await asyncio.gather(*self.handlers, return_exceptions=True)


def client_for(tierwise: StallingTierwise, timeout: float = TIMEOUT_SECONDS) -> AsyncTierwiseClient:
    return AsyncTierwiseClient(
        f"http://127.0.0.1:{tierwise.port}", timeout=timeout, upward_tier="top", upward_models=["m-top"]
    )


async def calls_until_consulted(client: AsyncTierwiseClient, tierwise: StallingTierwise) -> tuple[int, str]:
    """Ask until tierwise receives a call, at most RECOVERY_ATTEMPTS times: (calls it received, the
    last error). What counts is that tierwise is asked, not whether its answer beat the deadline."""
    before = tierwise.calls
    last_error = ""
    for _ in range(RECOVERY_ATTEMPTS):
        if tierwise.calls != before:
            break
        routing = await client.classify(text="after the burst")
        last_error = routing.error or ""
        await asyncio.sleep(0)  # let the server's handler count the call
    return tierwise.calls - before, last_error


async def consulted_after_overload() -> tuple[int, int, str, int]:
    """(calls tierwise received after the bursts, requests the bursts sent it, the last error,
    pools the client replaced)."""
    async with StallingTierwise(stalled=True).serving() as tierwise:
        client = client_for(tierwise)
        try:
            # A few seconds of overload, longer on a machine too slow to reach the server within the
            # deadline, until the stalled server has held more than a pool's worth of requests.
            for burst_number in range(MAX_BURSTS):
                burst = await asyncio.gather(*(client.classify(text=f"burst {i}") for i in range(BURST)))
                assert all(routing.failed_upward for routing in burst)
                if burst_number + 1 >= MIN_BURSTS and tierwise.held > BURST:
                    break
            burst_calls = tierwise.held
            tierwise.stalled = False
            tierwise.release.set()
            received, last_error = await calls_until_consulted(client, tierwise)
            return received, burst_calls, last_error, client.pools_replaced
        finally:
            await client.aclose()


def test_async_client_asks_tierwise_again_after_an_overload_burst():
    received, burst_calls, last_error, pools_replaced = asyncio.run(consulted_after_overload())
    assert burst_calls > BURST, (
        f"the stalled server received only {burst_calls} requests in {MAX_BURSTS} bursts of {BURST}: "
        "the client stopped asking tierwise after its pool was overrun (the leak of encode/httpcore#1093), "
        "or this machine never overran it"
    )
    assert received >= 1, (
        f"tierwise received no /classify call in {RECOVERY_ATTEMPTS} requests after the burst "
        f"(the client kept failing upward: {last_error})"
    )
    assert pools_replaced == 0  # recovered because no slot leaked, not by the stuck-pool backstop


async def consulted_through_a_stuck_pool() -> tuple[int, int, int, str]:
    """(calls tierwise received while the pool was stuck, after, pools replaced, the first error)."""
    async with StallingTierwise(stalled=False).serving() as tierwise:
        client = client_for(tierwise, timeout=0.1)
        client._clock = itertools.count(0.0, 1000.0).__next__  # every reading 1000 s later
        try:
            # What the leak of encode/httpcore#1093 leaves behind: every slot of the pool taken by a
            # connection that was created for a request and never connected, nor will be.
            pool = client._http._transport._pool  # type: ignore[attr-defined]
            origin = httpcore.URL(f"http://127.0.0.1:{tierwise.port}").origin
            pool._connections.extend(pool.create_connection(origin) for _ in range(MAX_IN_FLIGHT))
            first = await client.classify(text="into the stuck pool")
            while_stuck = tierwise.calls
            received, _ = await calls_until_consulted(client, tierwise)
            return while_stuck, received, client.pools_replaced, first.error or ""
        finally:
            await client.aclose()


def test_async_client_replaces_a_pool_that_yields_no_connection():
    while_stuck, received, pools_replaced, first_error = asyncio.run(consulted_through_a_stuck_pool())
    assert while_stuck == 0 and "no answer within 0.1 s" in first_error  # the pool really was stuck
    assert pools_replaced == 1
    assert received >= 1, f"tierwise received no /classify call in {RECOVERY_ATTEMPTS} requests"
