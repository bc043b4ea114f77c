"""The process backend: worker processes, one socket each, and one supervisor thread.

``_backend.py`` starts workers and owns the supervisor (``_supervisor.py``); a worker's
handle is ``_handle.py``; the worker process itself runs ``_child.py``.
"""
