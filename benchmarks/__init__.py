"""The benchmark harness behind BENCHMARKS.md: ``python -m benchmarks [overhead|e2e|ledger|all] [--quick]``.

Outside the test suite's pass/fail: it measures and reports, it does not assert speed
(tests/test_benchmarks_smoke.py only checks that the harness still runs and what shape it reports).
"""
