"""The canonical asyncio implementation; ``etcdsync._sync`` is generated from it."""
