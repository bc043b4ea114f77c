"""Pipelines: stages of processes, threads and coroutines, bounded between them."""
