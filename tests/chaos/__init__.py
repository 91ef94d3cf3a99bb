"""The chaos run: a realistic mix of mail and tracking traffic through real parts while they fail.

`harness.run_chaos` owns the run; `python -m tests.chaos` (`make chaos`) runs it
at full size, `test_chaos.py` runs a short form inside `make test`.
"""
