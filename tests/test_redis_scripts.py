"""The proxy's pipelined script connection: answers in order, survives a Redis restart, loads scripts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from poindexter_cloud.core.embedded import EmbeddedRedis, free_port
from poindexter_cloud.core.redis_scripts import ScriptClient, ScriptError


async def test_concurrent_calls_get_their_own_answers_and_a_restart_is_survived(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path, port=free_port())
    redis.start()
    client = ScriptClient(redis.url.replace("/0", "/3"))
    try:
        echo = client.register("return {KEYS[1], ARGV[1]}")
        replies = await asyncio.gather(*(echo(keys=[f"k{i}"], args=[i]) for i in range(200)))
        assert replies == [[f"k{i}".encode(), str(i).encode()] for i in range(200)]
        assert await client.call("SET", "where", "db3") == b"OK"
        redis.stop()
        with pytest.raises((ConnectionError, OSError)):
            await echo(keys=["k"], args=[1])
        redis.start()
        # A fresh server has no scripts loaded: NOSCRIPT is answered by sending the script itself.
        assert await echo(keys=["again"], args=["x"]) == [b"again", b"x"]
        with pytest.raises(ScriptError):
            await client.call("NOT-A-COMMAND")
    finally:
        await client.close()
        redis.stop()


async def test_a_call_sent_ahead_says_it_left_and_still_loads_its_script(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path, port=free_port())
    redis.start()
    client = ScriptClient(redis.url)
    try:
        count = client.register("return redis.call('INCR', KEYS[1])")
        first = count.send(keys=["n"])  # no connection yet: sent once connected, so not known to have left
        assert await first.delivered() is False and await first == 1
        assert await client.call("SCRIPT", "FLUSH") == b"OK"  # as after a Redis restart
        sent = [count.send(keys=["n"]) for _ in range(3)]  # one write for the three
        assert [await s.delivered() for s in sent] == [True, True, True]
        assert [await s for s in sent] == [2, 3, 4]  # each NOSCRIPT answered by sending the script
        assert await client.call("GET", "n") == b"4"
    finally:
        await client.close()
        redis.stop()
