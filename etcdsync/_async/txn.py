"""The fluent txn builder: ``client.transaction().If(...).Then(...).Else(...).commit()``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .. import errors
from .._pb import rpc_pb2 as rpc
from ..models import TxnResponse
from ..ops import Compare, Op, txn_request


class AsyncTxn:
    """A txn assembled step by step, in the Go client's order.

    ``If`` may be called once, before ``Then``; ``Then`` once, before ``Else``;
    ``Else`` once.  Calling them out of order raises
    :class:`~etcdsync.errors.InvalidRequest`, as Go's client panics.
    """

    def __init__(
        self, commit: Callable[[rpc.TxnRequest, float | None], Awaitable[TxnResponse]]
    ) -> None:
        self._commit = commit
        self._compare: list[Compare] = []
        self._success: list[Op] = []
        self._failure: list[Op] = []
        self._stage = 0  # 0: nothing yet, 1: If done, 2: Then done, 3: Else done

    def _advance(self, name: str, stage: int) -> None:
        if self._stage >= stage:
            raise errors.InvalidRequest(f"{name}() called after a later or the same clause")
        self._stage = stage

    def If(self, *compares: Compare) -> AsyncTxn:
        """The guards; all must hold for ``Then`` to run."""
        self._advance("If", 1)
        self._compare.extend(compares)
        return self

    def Then(self, *ops: Op) -> AsyncTxn:
        """Ops to run when every guard holds."""
        self._advance("Then", 2)
        self._success.extend(ops)
        return self

    def Else(self, *ops: Op) -> AsyncTxn:
        """Ops to run when a guard fails."""
        self._advance("Else", 3)
        self._failure.extend(ops)
        return self

    async def commit(self, *, timeout: float | None = None) -> TxnResponse:
        """Send the txn and return which branch ran with its responses."""
        request = txn_request(self._compare, self._success, self._failure)
        return await self._commit(request, timeout)
