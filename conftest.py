"""This repository's suite: qatbench's pytest hooks (harness/pytest_plugin.py), loaded under the
module's own name so that an installed copy (the pytest11 entry point) is not registered twice."""

import harness

harness.set_tf_environment()  # before any test module imports TensorFlow (tfmot needs Keras 2)

pytest_plugins = ("harness.pytest_plugin",)
