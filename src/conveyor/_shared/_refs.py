"""How a proxy crosses between processes: a proxy in every client, a ``Ref`` in its server.

A pickled proxy is its server's address, the object's id and type, and whether the
server counted it for the process receiving it (``counted``: a reply's proxies are,
one a client pickled is not; ``_proxies.adopt`` makes up the difference). Unpickled in
its own server, the same pickle makes a ``Ref``: a stand-in that holds the object while
another shared object stores it, and that goes back out as a counted proxy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._objects import Table


class _Serving:
    """What the server process sets up; empty in every client."""

    table: Table | None = None
    address = ""
    recipient = 0  # the pid a reply being pickled goes to


def serving(table: Table, address: str) -> None:
    _Serving.table = table
    _Serving.address = address


def replying_to(pid: int) -> None:
    """The reply pickled next goes to process ``pid`` (the proxies in it count for it)."""
    _Serving.recipient = pid


class Ref:
    """A shared object stored inside another one, in the server."""

    __slots__ = ("__weakref__", "oid")

    def __init__(self, oid: int) -> None:
        table = _Serving.table
        assert table is not None, "a Ref exists only in its server"
        if oid not in table.entries:
            raise LookupError(f"the shared object {oid} no longer exists in this manager")
        table.add_ref(oid)
        self.oid = oid

    def __del__(self) -> None:
        table = _Serving.table
        if table is not None:
            table.remove_ref(self.oid)

    def target(self) -> Any:
        """The object it stands for."""
        table = _Serving.table
        assert table is not None
        return table.entries[self.oid].obj

    def __getattr__(self, name: str) -> Any:
        # In the server, code given a shared object (a barrier's action) uses it directly.
        return getattr(self.target(), name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.oid == self.oid

    def __hash__(self) -> int:
        return hash((Ref, self.oid))

    def __repr__(self) -> str:
        table = _Serving.table
        entry = table.entries.get(self.oid) if table is not None else None
        return repr(entry.obj) if entry is not None else f"<freed shared object {self.oid}>"

    def __reduce__(self) -> Any:
        # Going out in a reply: count the proxy it becomes for the process it goes to.
        table = _Serving.table
        assert table is not None
        table.hold(self.oid, _Serving.recipient)
        typeid = table.entries[self.oid].typeid
        return rebuild_proxy, (_Serving.address, self.oid, typeid, True)


def rebuild_proxy(address: str, oid: int, typeid: str, counted: bool) -> Any:
    """Unpickle a proxy: a ``Ref`` in its own server, a proxy anywhere else."""
    if _Serving.table is not None and address == _Serving.address:
        return Ref(oid)
    from ._proxies import adopt  # the server imports no client code until it must

    return adopt(address, oid, typeid, counted)


__all__ = ["Ref", "rebuild_proxy", "replying_to", "serving"]
