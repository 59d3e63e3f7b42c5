"""Commands that measure the suite itself (python -m harness perf)."""
