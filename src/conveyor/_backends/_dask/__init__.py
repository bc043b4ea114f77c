"""The Dask backend: conveyor's engine over a ``distributed`` cluster.

``_cluster.py`` finds the cluster (a ``Client``, a scheduler address, or a ``LocalCluster``
of the pool's own) and watches which Dask workers it has; ``_backend.py`` gives every
engine slot one thread of one Dask worker and runs the ``conveyor-dask`` thread that reads
results; ``_handle.py`` is one slot's handle; ``_remote.py`` is what runs on the workers.
Only ``_remote.py`` is imported by a Dask worker; nothing here is imported by
``import conveyor``.
"""
