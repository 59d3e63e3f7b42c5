"""Your model, your data (issue 15): a user's trained model file and data run end to end in a
subprocess, every bad input is one line at start-up, and an installed copy runs the README's
registration example from a scratch folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import user_files

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.tf, pytest.mark.slow]
TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


def run_suite(tmp: Path, *args: str, cwd: Path = ROOT, python: str = sys.executable, timeout: int = 900):
    env = {**os.environ, "QATBENCH_CACHE": str(tmp / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([python, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(proc) -> list:
    return [line for line in proc.stderr.splitlines() if line.strip() and not TF_LOG.match(line)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained model with the listed layer classes as .keras and .h5, plus an .npz and image folder."""
    from harness.backend import keras  # sets the Keras-2 switch before the model is built

    folder = tmp_path_factory.mktemp("user")
    model = user_files.trained("all")
    model.save(folder / "edge.keras")
    model.save(folder / "edge.h5")
    user_files.build("mha").save(folder / "withmha.keras")
    model.save(folder / "edge_savedmodel", save_format="tf")
    keras.Sequential([keras.layers.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Softmax()]
                     ).save(folder / "nounits.h5")
    return {"keras": folder / "edge.keras", "h5": folder / "edge.h5", "mha": folder / "withmha.keras",
            "savedmodel": folder / "edge_savedmodel", "nounits": folder / "nounits.h5",
            "npz": user_files.write_npz(folder / "data.npz"), "images": user_files.write_image_folder(folder / "imgs"),
            "folder": folder}


def records_of(results: Path) -> list:
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    assert (run / "report.md").is_file()
    return [json.loads(p.read_text()) for p in sorted((run / "cases").glob("*.json"))]


def check_exact(records: list, expected_ids: set) -> None:
    assert {r["case_id"] for r in records} == expected_ids
    for r in records:
        assert r["status"] == "passed", (r["case_id"], r.get("violations"), r.get("error"))
        assert r["quantized_kernels"] == r["selected_kernels"], r["case_id"]
        assert r["predicted_weight_bytes"] == r["weight_bytes"], r["case_id"]
        assert r["pretrain_s"] == 0.0  # the file is the trained float baseline: no pre-training


def test_keras_file_with_npz_runs_the_grid(files, tmp_path):
    proc = run_suite(tmp_path, "benchmarks", "--qat-model-file", str(files["keras"]), "--qat-data", str(files["npz"]),
                     "--qat-skip-unsupported", "--qat-seeds", "0", "--qat-bits", "8,4", "--qat-results",
                     str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    records = records_of(tmp_path / "results")
    check_exact(records, {f"edge-last{n}-w{b}a8" for n in (0, 1, 3, 6) for b in (8, 4)})
    whole = next(r for r in records if r["case_id"] == "edge-last6-w8a8")
    assert whole["kept_float_layers"] == ["ln (LayerNormalization)"]
    assert whole["quantized_kernels"] == 7  # 5 convs (separable: 2) + 2 dense
    assert whole["dataset"]["train"] == 600 and whole["control_accuracy"] > 0.9


def test_h5_file_with_image_folder_runs(files, tmp_path):
    proc = run_suite(tmp_path, "benchmarks", "--qat-model-file", str(files["h5"]), "--qat-data", str(files["images"]),
                     "--qat-skip-unsupported", "--qat-seeds", "0", "--qat-bits", "8", "--qat-results",
                     str(tmp_path / "results"), "-k", "last1 or last6", "--qat-threads", "1")
    # loading the file starts TensorFlow: --qat-threads must apply before it (it raised in every case)
    assert proc.returncode == 0, proc.stdout[-3000:]
    records = records_of(tmp_path / "results")
    check_exact(records, {"edge-last1-w8a8", "edge-last6-w8a8"})
    assert {r["env"]["threads"] for r in records} == {1}
    assert records[0]["dataset"]["test"] == 48  # 240 images, 20% per class


def test_unsupported_layer_is_one_line_without_the_flag(files, tmp_path):
    proc = run_suite(tmp_path, "benchmarks", "--qat-model-file", str(files["keras"]), "--qat-data", str(files["npz"]),
                     "--qat-seeds", "0", "--qat-bits", "8", "-k", "last3", "--qat-results", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert "layer 'ln' (LayerNormalization) in a selected unit is not supported" in proc.stdout
    assert "--qat-skip-unsupported" in proc.stdout


def bad_npz(folder: Path, name: str, **override) -> Path:
    return user_files.write_npz(folder / f"{name}.npz", train=40, test=20, **override)


def bad_inputs(files) -> dict:
    folder = files["folder"]
    (folder / "notamodel.keras").write_text("hello")
    x, y = user_files.images(20, 5)
    return {
        "shape": ([files["keras"], bad_npz(folder, "shape", x_train=np.zeros((40, 8, 8, 3), "float32"))],
                  "examples have shape (8, 8, 3), the model's input is (16, 16, 3)"),
        "label": ([files["keras"], bad_npz(folder, "label", y_test=np.full(20, 7))],
                  "label 7 outside the model's 3 classes"),
        "empty": ([files["keras"], bad_npz(folder, "empty", x_test=np.zeros((0, 16, 16, 3), "float32"),
                                          y_test=np.zeros((0,), "int64"))], "the test split is empty"),
        "keys": ([files["keras"], bad_npz(folder, "keys", y_test=None)], "missing key(s) y_test"),
        "not a model": ([folder / "notamodel.keras", files["npz"]], "not a Keras model tf_keras can load"),
        "unaccounted": ([files["mha"], files["npz"]], "'mha' (MultiHeadAttention) holds weights that no unit"),
        "no units": ([files["nounits"], files["npz"]], "model has no quantizable weight layer"),
    }


def test_every_bad_input_is_one_line_at_start_up(files, tmp_path):
    for what, ((model, data), message) in bad_inputs(files).items():
        proc = run_suite(tmp_path, "benchmarks", "--qat-model-file", str(model), "--qat-data", str(data),
                         "--qat-results", str(tmp_path / "r"), timeout=300)
        lines = error_lines(proc)
        assert proc.returncode == 4, (what, proc.stdout[-1500:], lines)
        assert len(lines) == 1 and lines[0].startswith("ERROR: ") and message in lines[0], (what, lines)
        assert not (tmp_path / "r").exists(), what  # nothing ran


def test_model_shape_problems_are_one_line(tmp_path):
    from harness.backend import keras
    from harness.external import model_file

    two_out = keras.Model(inp := keras.layers.Input((4,)), [keras.layers.Dense(2)(inp), keras.layers.Dense(3)(inp)])
    regression = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1)])
    for model, message in ((two_out, "1 inputs and 2 outputs"), (regression, "not a classification output")):
        with pytest.raises(model_file.BadModel, match=re.escape(message)):
            model_file.check(model, "m.h5")
    no_units = keras.Sequential([keras.layers.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Softmax()])
    from harness.case import quantize

    with pytest.raises(ValueError, match="no quantizable weight layer"):
        quantize.units_of(no_units)


def test_keras3_file_is_refused_with_how_to_resave(tmp_path):
    script = ("import keras, sys; m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)]); "
              "m.save(sys.argv[1]); m.save(sys.argv[2])")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "k3.keras"), str(tmp_path / "k3.h5")], env=env,
                   check=True, capture_output=True, timeout=300)
    from harness.external import model_file

    for name in ("k3.keras", "k3.h5"):
        with pytest.raises(model_file.BadModel, match=r"written by Keras 3\.\d+.*model\.save\('model\.h5'\)"):
            model_file.read(tmp_path / name)


def test_softmax_output_is_trained_as_logits():
    from harness.external import model_file

    model = user_files.build("none")
    logits = model_file.as_logits(model)
    x, _ = user_files.images(16, 9)
    assert logits.layers[-1].get_config()["activation"] == "linear"
    np.testing.assert_array_equal(np.argmax(model.predict(x, verbose=0), -1), np.argmax(logits.predict(x, verbose=0), -1))


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"```python\n(# conftest\.py of your project\n.*?)```", text, flags=re.S)
    return block


# The installed plugin (README example, node ids, markers, multiworker, a shadowing harness): tests/test_plugin.py


@pytest.mark.parametrize("order,bits", [("last", 4), ("first", 4), ("single", 8)])
def test_every_cut_of_the_layer_zoo_model_is_exact(order, bits):
    """Each N of each order: the converter quantizes exactly the selected kernels, and the size
    formula predicts the file's weight bytes (LayerNormalization kept float, output quantized)."""
    from harness.case import audit, export, quantize, train
    from harness.models.data import Dataset
    from harness.design import size
    from harness.design.config import QuantConfig, Selection
    from harness.design.select import select

    model = user_files.build("all")
    units = quantize.units_of(model)
    x, y = user_files.images(128, 0)
    data, quant = Dataset("images", x, y, x[:32], y[:32], 3, "test"), QuantConfig(bits)
    for n in range(len(units)) if order == "single" else range(1, len(units) + 1):
        chosen, kept = quantize.without_unsupported(model, select(units, Selection(order, n)), quant, True)
        tuned = quantize.annotate(model, chosen, quant)
        train.compile_for_training(tuned, 1e-3)
        train.fit_steps(tuned, data, 2, 32, 0)
        found = audit.inspect(export.to_tflite(tuned, quantized=True, quant=quant))
        predicted = size.predict(units, chosen, quant)
        assert (found.quantized_kernels, found.weight_bytes) == (predicted.quantized_kernels, predicted.weight_bytes), \
            (order, n, found.kernel_dtypes)


def test_a_dense_on_a_sequence_and_a_stock_attention_layer():
    """keras Attention (no weights, two inputs) is kept float like any unsupported layer; a Dense
    reading a rank-3 tensor is refused at start-up: its quantized kernel would stay FLOAT32."""
    from harness.backend import keras
    from harness.case import quantize
    from harness.external import checked
    from harness.models.quantizable import UnsupportedQuantization
    from harness.design.config import QuantConfig, Selection
    from harness.design.select import select

    inp = keras.layers.Input((8, 4))
    x = keras.layers.Dense(4, name="proj")(inp)
    x = keras.layers.Attention(name="att")([x, x])
    model = keras.Model(inp, keras.layers.Dense(3, name="logits")(keras.layers.Flatten(name="flat")(x)))
    with pytest.raises(UnsupportedQuantization, match=r"'proj' \(Dense\) reads a rank-3 tensor"):
        checked._units(model, "seq.h5")
    units = quantize.units_of(model)
    _, kept = quantize.without_unsupported(model, select(units, Selection("last", 1)), QuantConfig(8), True)
    assert kept == (("att", "Attention"),)


def test_a_savedmodel_folder_loads_like_the_file(files):
    from harness.external import checked

    spec = checked.checked_spec(files["savedmodel"], files["npz"], keep_float=True)
    assert (spec.name, spec.num_units, spec.input_shape) == ("edge_savedmodel", 6, (16, 16, 3))
    assert spec.tier("smoke").n_values == (0, 1, 3, 6) and spec.tier("smoke").pretrain_epochs == 0


CUSTOM_LAYER = """
from harness.backend import keras


class Doubled(keras.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0
"""


def test_custom_objects_load_a_custom_layer(tmp_path, monkeypatch):
    from harness.backend import keras
    from harness.case import quantize
    from harness.external import model_file
    from harness.design.config import QuantConfig, Selection
    from harness.design.select import select

    (tmp_path / "mylayers_qat.py").write_text(CUSTOM_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mylayers_qat

    inp = keras.layers.Input((6,))
    model = keras.Model(inp, keras.layers.Dense(3, name="logits")(mylayers_qat.Doubled(name="twice")(inp)))
    model.save(tmp_path / "custom.keras")
    with pytest.raises(model_file.BadModel, match="layer class 'Doubled' is not a Keras layer: load it with "
                                                  "--qat-custom-objects module:name"):
        model_file.read(tmp_path / "custom.keras")
    loaded = model_file.read(tmp_path / "custom.keras", "mylayers_qat:Doubled")
    assert type(loaded.layers[1]).__name__ == "Doubled"
    units = quantize.units_of(loaded)
    with pytest.raises(ValueError, match=r"'twice' \(Doubled\) in a selected unit is not supported"):
        quantize.without_unsupported(loaded, select(units, Selection("last", 1)), QuantConfig(8), False)


def test_models_from_an_entry_point_are_registered(monkeypatch):
    from importlib import metadata

    from harness.external import register
    from harness.design import registry
    from harness.design.config import RunOptions

    entry = metadata.EntryPoint("acme", "tests.test_user_spec:spec", register.ENTRY_POINT_GROUP)
    monkeypatch.setattr(register.metadata, "entry_points",
                        lambda group: [entry] if group == register.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))
    assert register.register_hooked(object()) == ("tiny",)
    opts = register.register_model_file(RunOptions(models=("tiny",)))
    assert opts.models == ("tiny",) and registry.source_of("tiny").startswith("entry point acme")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        register.register_model_file(RunOptions(models=("nope",)))


def test_threads_tensorflow_already_runs_with_are_kept_or_refused_in_one_line():
    from harness.backend import ThreadsFixed, set_threads, tf

    _ = tf.constant(1) + 1  # TensorFlow has started in this process
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    if intra and intra == inter:
        set_threads(intra)  # what it already has: nothing to change, no error
    with pytest.raises(ThreadsFixed, match=r"^--qat-threads 7: TensorFlow already runs in this process") as info:
        set_threads(7)
    assert "\n" not in str(info.value)
