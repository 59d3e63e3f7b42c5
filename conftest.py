"""This repository's suite: qatbench's pytest hooks (harness/pytest_plugin.py), loaded under the
module's own name so that an installed copy (the pytest11 entry point has that name) is not
registered twice. This repository's own tests import TensorFlow at module level, so the Keras-2
switch is set here, before collection; the plugin alone sets it only when a case runs."""

import harness

harness.set_tf_environment()

pytest_plugins = ("harness.pytest_plugin",)
