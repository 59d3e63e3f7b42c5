"""The benchmark cases of this repository's suite; the test itself lives in the package
(harness/suite/test_qat.py), so a project that installed qatbench runs the very same test."""

from harness.suite.test_qat import test_qat_case  # noqa: F401  (pytest collects it from here)
