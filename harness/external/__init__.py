"""Models from outside the package, in one place: a user's model file and data (--qat-model-file,
--qat-data), the pytest_qatbench_models hook and the ``qatbench.models`` entry points. Each becomes a
ModelSpec in the registry and then runs exactly like a zoo model."""
