"""Transport: the wire protocol, the framed socket, shared memory and pickling.

The lowest layer but the leaves: it knows nothing of jobs, engines or pools.
"""
