"""IdentityCache: remembers by identity, never keeps its keys alive, never confuses two."""

from __future__ import annotations

import gc

from conveyor._identity import IdentityCache


def make_function():
    return lambda x: x


def test_a_dead_key_takes_its_entry_with_it():
    cache: IdentityCache[str] = IdentityCache(8)
    fn = make_function()
    cache.put(fn, "pickled")
    assert cache.get(fn) == "pickled"
    del fn
    gc.collect()
    assert len(cache) == 0


def test_a_new_object_with_a_recycled_id_is_not_the_old_one():
    cache: IdentityCache[str] = IdentityCache(8)
    first = make_function()
    cache.put(first, "first")
    first_id = id(first)
    del first
    gc.collect()
    for _ in range(1000):  # CPython reuses the freed memory sooner or later
        candidate = make_function()
        if id(candidate) == first_id:
            break
    assert cache.get(candidate) is None
    cache.put(candidate, "second")
    assert cache.get(candidate) == "second"


def test_builtins_that_refuse_weak_references_are_held_and_the_oldest_entry_goes():
    cache: IdentityCache[int] = IdentityCache(2)
    cache.put(len, 1)
    cache.put(abs, 2)
    assert cache.get(len) == 1  # now the most recent
    cache.put(min, 3)
    assert cache.get(abs) is None and cache.get(len) == 1 and cache.get(min) == 3
