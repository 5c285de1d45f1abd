"""ElectionObserver: every leadership change of an election, each once and in order.

The candidates of an election are the keys under ``<name>/``; the leader is the
one with the lowest create revision.  The observer mirrors those keys (one read
at revision R, one watch from R + 1: :class:`~.mirror.AsyncPrefixMirror`) and
replays them revision by revision, reporting the leader whenever it changes.
"""

from __future__ import annotations

from collections import deque

from ... import errors
from ..._deadline import Deadline
from ...models import KeyValue
from .mirror import AsyncPrefixMirror
from .recipe_client import AsyncRecipeClient

__all__ = ["AsyncElectionObserver"]


class AsyncElectionObserver:
    """Leadership changes of one election, as :class:`~etcdsync.KeyValue` of the leader key.

    Built from one read of every candidate at revision R and one watch from R+1,
    so no change falls between them.  The candidates are replayed revision by
    revision: every leader that held the election at some revision is reported,
    in order, including the proposals it proclaimed; a leader that dies is
    followed by the next candidate (or, if there is none, by the next to
    appear).  A change is a new (key, create revision, value) of the leader.
    Only when the watch falls behind a compaction are intermediate leaders
    skipped: the observer then re-reads the candidates and carries on from the
    current leader (counted in :attr:`resyncs`).

    ``get(timeout)`` returns the next leader (raising
    :class:`~etcdsync.errors.Timeout`); iteration ends after :meth:`cancel`;
    :class:`~etcdsync.errors.ClientClosedError` ends it when the client closes.
    :meth:`next_change` reports **vacancy** too: ``None`` when the election has
    no leader - there was none when observing began, or the leader left (died,
    resigned) with no candidate to follow it.
    """

    def __init__(self, client: AsyncRecipeClient, prefix: bytes) -> None:
        self._prefix = prefix
        self._mirror = AsyncPrefixMirror(client, prefix, on_revision=self._note_leader)
        self._reported = False  # nothing reported yet, not even a vacancy
        self._last: tuple[bytes, int, bytes] | None = None  # None: vacant
        self._pending: deque[KeyValue | None] = deque()
        self.vacancies = 0
        """How many times the election was found without a leader (the start included)."""

    @property
    def resyncs(self) -> int:
        """How many times a compaction (or another watch failure) forced a fresh
        read of the candidates."""
        return self._mirror.reloads

    def _note_leader(self, revision: int) -> None:
        candidates = self._mirror.kvs
        leader = min(candidates.values(), key=lambda kv: kv.create_revision) if candidates else None
        identity = None if leader is None else (leader.key, leader.create_revision, leader.value)
        if identity != self._last or not self._reported:
            self._reported = True
            self._last = identity
            self._pending.append(leader)
            if leader is None:
                self.vacancies += 1

    async def next_change(self, timeout: float | None = None) -> KeyValue | None:
        """The next change: the new leader, or ``None`` when the election became
        vacant (the leader left with no successor; also first, when nobody led as
        observing began).  Raises :class:`~etcdsync.errors.Timeout` after
        ``timeout`` seconds without one (None or ``inf``: no limit), and
        ``StopAsyncIteration`` once cancelled."""
        deadline = Deadline(timeout)
        while not self._pending:
            try:
                await self._mirror.step(deadline.remaining())
            except errors.CompactedError:
                continue  # the mirror dropped its watch: the next step re-reads
            except TimeoutError:
                if deadline.at is None:
                    raise  # a request of the client's timed out, not our wait
                raise errors.Timeout(f"no leadership change within {timeout} s") from None
        return self._pending.popleft()

    async def get(self, timeout: float | None = None) -> KeyValue:
        """The next leader (vacancies are skipped: see :meth:`next_change`); raises
        :class:`~etcdsync.errors.Timeout` after ``timeout`` seconds without one, and
        ``StopAsyncIteration`` once cancelled."""
        deadline = Deadline(timeout)
        while True:
            leader = await self.next_change(deadline.remaining())
            if leader is not None:
                return leader

    def __aiter__(self) -> AsyncElectionObserver:
        return self

    async def __anext__(self) -> KeyValue:
        return await self.get()

    async def cancel(self) -> None:
        """Stop observing; iteration ends after the changes already received."""
        await self._mirror.close()

    async def __aenter__(self) -> AsyncElectionObserver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self._prefix!r}>"
