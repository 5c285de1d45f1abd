"""STM isolation levels: pure and IO-free, shared by both flavours.

The levels are those of Go's ``client/v3/concurrency`` STM; ``etcd.stm(fn,
isolation=...)`` accepts an :class:`Isolation` member or its string value.
"""

from __future__ import annotations

import enum

from .errors import InvalidRequest

__all__ = ["Isolation"]


class Isolation(str, enum.Enum):
    """How much an STM transaction's reads and commit are protected from others.

    From the strongest to the weakest:

    * ``SERIALIZABLE_SNAPSHOT`` (the default, as in Go): every read of an attempt
      sees the store at one revision (that of its first read), and the commit
      applies only if no key it read *or wrote* changed after that revision.
      Blind writes are checked too, so two attempts never both write a key from
      the same snapshot.
    * ``SERIALIZABLE``: reads at one revision; the commit applies only if no key it
      read changed.  Keys written without being read are not checked.
    * ``REPEATABLE_READS``: each key is read from etcd once per attempt (at the
      latest revision, so two keys may be read at different revisions); the commit
      applies only if no key it read changed since it was read.  The function may
      see a state that never existed (read skew), but a commit never rests on one.
    * ``READ_COMMITTED``: no checks: each key is read once per attempt at the
      latest revision and the commit always applies.  Lost updates and read skew
      are possible; use it only for writes that do not depend on what was read.
    """

    SERIALIZABLE_SNAPSHOT = "serializable_snapshot"
    SERIALIZABLE = "serializable"
    REPEATABLE_READS = "repeatable_reads"
    READ_COMMITTED = "read_committed"

    @classmethod
    def of(cls, value: Isolation | str) -> Isolation:
        """``value`` as an :class:`Isolation`; a typed error for anything else."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        choices = ", ".join(repr(member.value) for member in cls)
        raise InvalidRequest(f"isolation must be an Isolation or one of {choices}; got {value!r}")

    @property
    def pins_snapshot(self) -> bool:
        """True when every read of an attempt is made at one revision."""
        return self in (Isolation.SERIALIZABLE_SNAPSHOT, Isolation.SERIALIZABLE)

    @property
    def checks_reads(self) -> bool:
        """True when the commit compares the read set's mod revisions."""
        return self is not Isolation.READ_COMMITTED
