"""qatbench harness: the library behind the benchmark cases.

Pure modules (config, units, select, size, records, fit, plan, baseline) import no
TensorFlow. Everything that needs TensorFlow imports it from :mod:`harness.backend`.
"""

__version__ = "0.1.0"
