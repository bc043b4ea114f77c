"""Queues and pipes between processes: the kernel carries the items, nobody holds a lock."""
