"""Cluster membership: list, add, remove, update and promote members, and refresh
the client's endpoints from the membership."""

from __future__ import annotations

from collections.abc import Sequence

from .. import errors
from .._methods import MEMBER_ADD, MEMBER_LIST, MEMBER_PROMOTE, MEMBER_REMOVE, MEMBER_UPDATE
from ..admin_types import Member, MemberAddResult
from .connection import AsyncConnection


def _member_id(member_id: object) -> int:
    if not isinstance(member_id, int) or isinstance(member_id, bool) or member_id <= 0:
        raise errors.InvalidRequest(f"a member id must be an int > 0, got {member_id!r}")
    return member_id


def _peer_urls(peer_urls: str | Sequence[str]) -> list[str]:
    urls = [peer_urls] if isinstance(peer_urls, str) else list(peer_urls)
    if not urls:
        raise errors.InvalidRequest("at least one peer URL is required")
    for url in urls:
        # etcd only says "given member URLs are invalid"; name the culprit here.
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise errors.InvalidRequest(f"a peer URL must be http(s)://host:port, got {url!r}")
    return urls


def _members(pb_members: object) -> list[Member]:
    return [Member.from_pb(m) for m in pb_members]  # type: ignore[attr-defined]


class AsyncClusterAPI:
    """Cluster membership requests; mixed into :class:`etcdsync.AsyncClient`.

    Membership changes go through raft like writes: on
    :class:`~etcdsync.errors.Unavailable` or :class:`~etcdsync.errors.Timeout`
    their outcome is unknown (check with :meth:`member_list`), so they are never
    retried after reaching a server.  Member ids are ``int`` (etcdctl prints them
    in hex).
    """

    _conn: AsyncConnection

    async def member_list(
        self, linearizable: bool = False, *, timeout: float | None = None
    ) -> list[Member]:
        """Every member, learners included, in the order the server lists them.

        By default the answering member reports its own view, which may briefly lag a
        membership change; ``linearizable=True`` asks it to confirm with the leader
        first (etcd 3.5+; older servers ignore the flag).
        """
        request = MEMBER_LIST.request(linearizable=linearizable)
        response = await self._conn.unary(MEMBER_LIST, request, timeout=timeout, idempotent=True)
        return _members(response.members)

    async def member_add(
        self,
        peer_urls: str | Sequence[str],
        *,
        learner: bool = False,
        timeout: float | None = None,
    ) -> MemberAddResult:
        """Add a member that will listen on ``peer_urls``; start it afterwards.

        The new etcd process must then be started with ``--initial-cluster`` listing
        the current members plus itself and ``--initial-cluster-state existing``.
        A voting member raises the quorum at once, before it has started: prefer
        ``learner=True`` (see :meth:`member_add_as_learner`) and promote it once it
        caught up.  Raises :class:`~etcdsync.errors.MemberExistsError` when the peer
        URLs are taken, :class:`~etcdsync.errors.TooManyLearnersError` when a learner
        already exists.  Until the leader has been connected to every voting member
        for 5 seconds (after a start or a member restart) etcd refuses membership
        changes with :class:`~etcdsync.errors.Unavailable` and the details
        ``"etcdserver: unhealthy cluster"``; nothing was changed then, so that one
        is safe to retry after a pause.
        """
        request = MEMBER_ADD.request(peerURLs=_peer_urls(peer_urls), isLearner=bool(learner))
        response = await self._conn.unary(MEMBER_ADD, request, timeout=timeout, idempotent=False)
        return MemberAddResult.from_pb(response)

    async def member_add_as_learner(
        self, peer_urls: str | Sequence[str], *, timeout: float | None = None
    ) -> MemberAddResult:
        """Add a non-voting learner: it receives the log without affecting the quorum.

        Promote it with :meth:`member_promote` once it has caught up.
        """
        return await self.member_add(peer_urls, learner=True, timeout=timeout)

    async def member_remove(self, member_id: int, *, timeout: float | None = None) -> list[Member]:
        """Remove a member; returns the remaining members.

        Raises :class:`~etcdsync.errors.MemberNotFoundError` for an unknown id, and
        ``Unavailable("etcdserver: unhealthy cluster")`` when removing it would leave
        too few members connected (see :meth:`member_add`).  The removed etcd
        process notices and exits by itself.
        """
        request = MEMBER_REMOVE.request(ID=_member_id(member_id))
        response = await self._conn.unary(MEMBER_REMOVE, request, timeout=timeout, idempotent=False)
        return _members(response.members)

    async def member_update(
        self, member_id: int, peer_urls: str | Sequence[str], *, timeout: float | None = None
    ) -> list[Member]:
        """Replace a member's peer URLs; returns the members after the change."""
        request = MEMBER_UPDATE.request(ID=_member_id(member_id), peerURLs=_peer_urls(peer_urls))
        response = await self._conn.unary(MEMBER_UPDATE, request, timeout=timeout, idempotent=False)
        return _members(response.members)

    async def member_promote(self, member_id: int, *, timeout: float | None = None) -> list[Member]:
        """Make a learner a voting member; returns the members after the change.

        Raises :class:`~etcdsync.errors.LearnerNotReadyError` while the learner's log
        is still behind the leader's (nothing changed: retry shortly), and
        :class:`~etcdsync.errors.MemberNotLearnerError` for a voting member.
        """
        request = MEMBER_PROMOTE.request(ID=_member_id(member_id))
        response = await self._conn.unary(
            MEMBER_PROMOTE, request, timeout=timeout, idempotent=False
        )
        return _members(response.members)

    async def sync_endpoints(self, *, timeout: float | None = None) -> list[str]:
        """Replace the client's endpoints with the client URLs the cluster advertises.

        Opt-in: the client never changes its endpoints by itself.  Call it after
        adding or removing members (or periodically) so that failover can reach
        members that were not configured.  Learners and members that have not
        started yet are left out, as they serve no client requests.  The current
        endpoint is kept when it is still listed.  Returns the new endpoints.
        """
        urls: list[str] = []
        for member in await self.member_list(timeout=timeout):
            if member.is_started and not member.is_learner:
                urls.extend(u for u in member.client_urls if u not in urls)
        if not urls:
            raise errors.EtcdError("no started voting member advertises a client URL")
        self._conn.set_endpoints(urls)
        return list(self._conn.endpoints)
