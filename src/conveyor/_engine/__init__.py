"""The engine: decides which chunk runs where and keeps the books. No I/O, no pickling.

See ``_engine.py`` for the map of its modules, and ``_contract.py`` for what a backend
implements.
"""
