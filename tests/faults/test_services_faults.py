"""Service discovery across a leader crash: registrations survive, the cache stays exact.

Two instances are registered through a client on a follower (TTL 5 s); an observer
client on the leader follows the namespace with a prefix cache.  The leader is killed
(SIGKILL); while it is down a third instance registers and deregisters through the
surviving members; then the member comes back.  The registrations are never lost (no
``LOST`` event, same leases: etcd keeps leases across a leader change), and the
observer's cache - whose member died - fails over and reports exactly the store's
history of the namespace, each change once, in order, with no reset.
"""

from __future__ import annotations

import time

import pytest

from etcdsync import CacheEvent, CacheEventType, RegistrationEvent
from etcdsync.testing import EtcdCluster
from etcdsync.watch_types import EventType

from .conftest import client, endpoints_first, report

pytestmark = pytest.mark.faults

ADDED, REMOVED = CacheEventType.ADDED, CacheEventType.REMOVED


@pytest.mark.timeout(60)
def test_services_across_a_leader_crash(cluster: EtcdCluster) -> None:
    namespace = "svc"
    leader = cluster.wait_for_leader()
    follower = next(i for i in range(len(cluster)) if i != leader)
    near_follower = endpoints_first(cluster.endpoints, follower)
    with (
        client(near_follower) as registrant,
        client(endpoints_first(cluster.endpoints, leader)) as observer,
        client(near_follower) as writer,
    ):
        start = registrant.get(namespace).revision + 1
        own = registrant.services(namespace, ttl=5)
        registrations = [own.register("api", f"r{i}", "10.0.0.1", 8000 + i) for i in range(2)]
        leases = [r.instance.lease for r in registrations if r.instance]
        lost: list[RegistrationEvent] = []
        for registration in registrations:
            registration.add_listener(lost.append)
        watching = observer.services(namespace).start(timeout=10)
        stream = watching.cache.events(initial=True)
        initial = [stream.get(10) for _ in range(2)]
        assert sorted(e.key for e in initial) == [b"svc/api/r0", b"svc/api/r1"]

        cluster.kill(leader)  # the observer's member
        killed_at = time.monotonic()
        cluster.wait_for_leader()
        elected_after = time.monotonic() - killed_at
        third_services = writer.services(namespace, ttl=5)
        third = third_services.register("api", "w", "10.0.0.2", 9000, timeout=10)
        third.update({"busy": True})
        third.deregister(timeout=10)
        end = writer.get(namespace).revision
        cluster.start_member(leader)

        got: list[CacheEvent] = []
        while not got or got[-1].revision < end:
            got.append(stream.get(20))
        caught_up_after = time.monotonic() - killed_at

        # The store's own history of the namespace, from a watch replay.
        expected: list[tuple[CacheEventType, bytes, int]] = []
        known: set[bytes] = set()
        with writer.watch(namespace + "/", prefix=True, start_revision=start) as watcher:
            while not expected or expected[-1][2] < end:
                for event in watcher.get(timeout=10).events:
                    if event.type is EventType.DELETE:
                        known.discard(event.key)
                        expected.append((REMOVED, event.key, event.revision))
                    else:
                        kind = CacheEventType.UPDATED if event.key in known else ADDED
                        known.add(event.key)
                        expected.append((kind, event.key, event.revision))
        # The initial events carry the first read's revision: compare their keys' own.
        assert [(e.type, e.key, e.kv and e.kv.mod_revision) for e in initial] == expected[:2]
        assert [(e.type, e.key, e.revision) for e in got] == expected[2:]
        assert watching.cache.resets == 0 and not any(e.resync for e in got)
        assert lost == [] and all(r.registered for r in registrations)
        live = watching.instances("api", timeout=10)
        assert [(i.id, i.lease) for i in live] == [("r0", leases[0]), ("r1", leases[1])]
        stream.cancel()
        watching.close()
        own.close()
        third_services.close()
    report(
        f"services across a leader kill (etcd {cluster.version}): 2 registrations kept "
        f"(no loss, same leases), observer's cache {len(initial) + len(got)} events = the "
        f"store's history, no reset; new leader after {elected_after:.2f} s, caught up "
        f"{caught_up_after:.2f} s after the kill"
    )
