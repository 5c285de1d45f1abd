"""Benchmark of etcdsync against the other etcd clients: ``python -m bench`` (see __main__)."""
