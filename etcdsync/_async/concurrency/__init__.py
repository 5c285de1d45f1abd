"""Recipes built on Txn compare-and-swap and lease-bound keys, using only the
client's public API: Session, Mutex, RWLock, Semaphore, Election, ConfigWatcher."""
