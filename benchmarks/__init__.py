"""Benchmark suite: conveyor against its peers, side by side in one run.

Run ``python -m benchmarks.run --help`` from the repository root; see ``benchmarks/README.md``.
"""
