"""A prefix cache, asyncio flavour: a live local copy of a prefix, with listeners.

    python examples/prefix_cache_async.py                    # starts an embedded etcd
    python examples/prefix_cache_async.py 127.0.0.1:2379     # or uses yours

The same steps as ``prefix_cache.py`` with ``AsyncClient``.  ``etcd.cache(prefix)``
reads every key under the prefix at one revision, then follows a watch from the next
one: reads (``get``, ``in``, iteration) are local, plain (not awaited) and never block,
and listeners hear about every added, updated and removed key once, in revision order -
here, feature flags flipped by another client.  A listener may be a coroutine function;
the same events also come as a stream (``async for event in cache.events()``), here
read by a task of its own.  ``await wait_for(...)`` waits until a condition on the
contents holds.  Everything lives under a fresh prefix, deleted at the end.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from etcdsync import AsyncClient, AsyncPrefixCache, CacheEvent, CacheEventType, Op
from etcdsync.testing import endpoint_or_embedded


async def follow(flags: AsyncPrefixCache, prefix: str) -> list[str]:
    """The stream form: every change, the present keys first, until the kill-switch."""
    seen = []
    async with flags.events(initial=True) as stream:
        async for event in stream:
            seen.append(f"{event.type.value} {event.key.decode().removeprefix(prefix)}")
            if event.key == (prefix + "kill-switch").encode():
                return seen
    return seen


async def main(endpoint: str) -> None:
    prefix = f"examples/cache-async/{uuid.uuid4().hex[:8]}/flags/"
    async with AsyncClient(endpoint) as etcd, AsyncClient(endpoint) as admin:
        await admin.put(prefix + "dark-mode", "off")
        await admin.put(prefix + "beta", "on")
        heard: list[CacheEvent] = []
        done = asyncio.Event()

        async def listener(event: CacheEvent) -> None:  # awaited in a task of its own
            print(f"  listener: {event.type.value:8} {event.key.decode()} = {event.value!r}")
            heard.append(event)
            if len(heard) == 2 + 4:
                done.set()

        try:
            async with etcd.cache(prefix) as flags:
                flags.add_listener(listener, initial=True)  # the present keys first
                stream = asyncio.create_task(follow(flags, prefix))
                print("at revision", flags.revision, "the flags are:")
                for kv in flags:
                    print(f"  {kv.key.decode()} = {kv.value.decode()}")
                await admin.put(prefix + "dark-mode", "on")
                await admin.txn([], [Op.put(prefix + "new-ui", "on"), Op.delete(prefix + "beta")])
                await admin.put(prefix + "kill-switch", "off")
                kill_switch = (prefix + "kill-switch").encode()  # snapshot keys are bytes
                snap = await flags.wait_for(lambda s: kill_switch in s, timeout=5)
                names = {k.decode().rsplit("/", 1)[1]: v.value.decode() for k, v in snap.items()}
                print(f"kill-switch seen at revision {snap.revision}:", names)
                await asyncio.wait_for(done.wait(), 5)
                assert [e.type for e in heard].count(CacheEventType.REMOVED) == 1, heard
                print("stream:  ", ", ".join(await asyncio.wait_for(stream, 5)))
                dark = flags.get(prefix + "dark-mode")
                print("dark-mode is", dark.value.decode() if dark else None, "- read locally")
        finally:
            deleted = await admin.delete(prefix.split("flags/")[0], prefix=True)
            print(f"cleaned up {deleted.deleted} key(s)")


if __name__ == "__main__":
    with endpoint_or_embedded(sys.argv[1:]) as endpoint:
        asyncio.run(main(endpoint))
