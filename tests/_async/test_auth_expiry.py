"""Auth tokens that expire under a working client (issue 18's acceptance): a put loop, a
watch and a held lock across four token expiries (``--auth-token-ttl 2``) and an etcd
restart (which forgets every token) - no user-visible failure, the watch history exact,
the lock held throughout.

Canonical asyncio test; ``tests/_sync/test_auth_expiry.py`` is generated from it.
"""

from __future__ import annotations

from etcdsync import AsyncClient, Op
from etcdsync._backends._async import sleep
from etcdsync.testing.plugin import EtcdServerFactory

# Simple tokens expire after this many idle seconds (etcd checks once a second).
TOKEN_TTL = 2
EXPIRIES = 4
PUTS_PER_ROUND = 10


async def test_puts_watch_and_lock_across_token_expiries_and_a_restart(
    etcd_server_factory: EtcdServerFactory,
) -> None:
    server = etcd_server_factory(extra_args=[f"--auth-token-ttl={TOKEN_TTL}"])
    server.etcdctl("user", "add", "root:rootpw")
    server.etcdctl("auth", "enable")
    async with AsyncClient(server.endpoint, user="root", password="rootpw", timeout=5) as etcd:
        watcher = await etcd.watch("data/", prefix=True)
        lock = await etcd.lock("locks/job", ttl=10).acquire(timeout=5)
        written: list[int] = []
        tokens: set[str | None] = set()

        async def burst(round_: int) -> None:
            # Any failure here is user-visible: no retry, no except.
            for i in range(PUTS_PER_ROUND):
                written.append((await etcd.put(f"data/{round_}-{i}", "v")).revision)
            done = await lock.guarded_txn([Op.put("state/round", str(round_))])
            assert done.succeeded
            tokens.add(etcd._conn.token)

        await burst(0)
        for round_ in range(1, EXPIRIES + 1):
            # Waiting on the server's token clock: nothing announces an expiry.
            await sleep(TOKEN_TTL + 1.5)
            await burst(round_)
        server.restart()  # a restarted member forgot every token
        await burst(EXPIRIES + 1)

        seen: list[int] = []
        while len(seen) < len(written):
            seen.extend(event.kv.mod_revision for event in (await watcher.get(timeout=10)).events)
        assert seen == written  # exact: nothing lost, nothing twice, in order
        assert lock.held and not lock.lost.is_set()
        assert len(tokens) >= EXPIRIES + 1, tokens  # a fresh login after each expiry
        await watcher.cancel()
        await lock.release()
