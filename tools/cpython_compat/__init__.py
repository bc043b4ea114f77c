"""CPython's own pool/executor tests, run against conveyor: see README.md beside this file."""
