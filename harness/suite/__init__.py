"""The benchmark cases as a test module that pytest collects: from this repository through
benchmarks/test_qat.py, and in a project that installed qatbench through the plugin (pytest_plugin)."""
