"""qatbench's C++ training kernels (``harness/case/kernels/*.cc``): built once for the installed TensorFlow,
cached in the user's cache (``$QATBENCH_KERNELS``, else ~/.cache/qatbench/kernels), checksummed, loaded
with ``tf.load_op_library``.

They make tfmot's fake-quants cheaper to train without changing a number: the activation quantizer's
batch min/max and input gradient, and the per-channel weight quantizer's min/max, forward and input
gradient (see ``fakequant.py`` and tests/test_native_kernels.py). Where they cannot be built (no C++ compiler, no
TensorFlow headers) or ``QATBENCH_NATIVE_FAKEQUANT=0``, one warning says so and TensorFlow's ops are used:
slower, same numbers. ``./install.sh`` builds them; otherwise the first process that needs them does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from harness.backend import control_flow_util, tf
from harness.options import default_kernel_dir
from harness.results.records import write_bytes_atomic

KERNELS = Path(__file__).with_name("kernels")
SOURCE = KERNELS / "fake_quant_activation.cc"  # the ops; the loops below are compiled once per ISA
LOOPS, LOOPS_HEADER = KERNELS / "fake_quant_loops.cc", KERNELS / "fake_quant_loops.h"
SOURCES = (SOURCE, LOOPS, LOOPS_HEADER)
LIBRARY_NAME = "libqatbench_fake_quant.so"
ENV_SWITCH = "QATBENCH_NATIVE_FAKEQUANT"
# -ffp-contract=off: no fused multiply-add, like TensorFlow's pip build (its Eigen code has no FMA);
# no -march: the library may sit in a cache shared by machines of different CPUs, so the wider ISAs are
# separate builds of the loops, picked at run time. -w: TensorFlow's headers warn by the hundred about
# their own deprecations.
OPTIMIZE_FLAGS = ("-fPIC", "-O3", "-ffp-contract=off", "-fno-math-errno", "-w")
X86_LOOP_BUILDS = (("generic", ()), ("avx2", ("-mavx2",)), ("avx512", ("-mavx512f",)))
BUILD_TIMEOUT_S = 300


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


# whether train steps traced from now on may use the kernels (fakequant.install sets it; perf times both)
_STATE = {"on": enabled()}


def set_active(on: bool) -> None:
    _STATE["on"] = bool(on)


def in_xla_function() -> bool:
    """Whether the graph being traced is (inside) an XLA-compiled function, which cannot run custom ops."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def usable() -> bool:
    """Whether the op being traced now may call the kernels: switched on, loaded, and not under XLA."""
    return _STATE["on"] and ops() is not None and not in_xla_function()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _compiler_version(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unreadable: {error}"
    return done.stdout.splitlines()[0] if done.stdout else f"exit {done.returncode}"


def loop_builds() -> tuple:
    """(ISA namespace, its flags) for each build of the loops on this architecture."""
    return X86_LOOP_BUILDS if platform.machine() in ("x86_64", "AMD64") else (("generic", ()),)


def build_commands(compiler: str, folder: Path) -> list[list[str]]:
    """One compile per loop build, then the op library linked with them."""
    objects = [folder / f"loops_{isa}.o" for isa, _ in loop_builds()]
    commands = [[compiler, "-c", *OPTIMIZE_FLAGS, *flags, f"-DQATBENCH_ISA={isa}", str(LOOPS), "-o", str(obj)]
                for (isa, flags), obj in zip(loop_builds(), objects)]
    commands.append([compiler, "-shared", *OPTIMIZE_FLAGS, *tf.sysconfig.get_compile_flags(), str(SOURCE),
                     *map(str, objects), "-o", str(folder / LIBRARY_NAME), *tf.sysconfig.get_link_flags()])
    return commands


def build_key(compiler: str) -> str:
    """Everything that shapes the library: its sources, TensorFlow (headers and ABI), the commands, the
    compiler and the machine architecture."""
    material = {"sources": [hashlib.sha256(path.read_bytes()).hexdigest() for path in SOURCES],
                "tensorflow": tf.__version__, "commands": build_commands("CXX", Path("OUT")),
                "compiler": _compiler_version(compiler), "machine": platform.machine()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]


def _run_compiler(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"{command[0]} could not run: {error}") from error
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()[-1:]
        raise RuntimeError(f"{command[0]} failed (exit {done.returncode}): {' '.join(errors[:1]) or 'no output'}")


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(kernel_dir: Path | None = None) -> Path:
    """The library for this TensorFlow in ``kernel_dir`` (default: options.default_kernel_dir()), compiled
    now unless a verified copy is there; raises RuntimeError with a one-line reason if it cannot be built."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++ or $CXX) found")
    folder = Path(kernel_dir or default_kernel_dir()) / build_key(compiler)
    library, sidecar = folder / LIBRARY_NAME, folder / f"{LIBRARY_NAME}.sha256"
    if library.exists() and sidecar.exists() and sidecar.read_text().strip() == _checksum(library):
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:  # concurrent builds never see a partial file
        for command in build_commands(compiler, Path(scratch)):
            _run_compiler(command)
        content = (Path(scratch) / LIBRARY_NAME).read_bytes()
    write_bytes_atomic(library, content)
    write_bytes_atomic(sidecar, hashlib.sha256(content).hexdigest().encode())
    return library


@functools.lru_cache(maxsize=None)
def _load():
    """(the loaded op module or None, a one-line status)."""
    if not enabled():
        return None, f"off ({ENV_SWITCH}=0)"
    try:
        library = build()
        module = tf.load_op_library(str(library))
    except (RuntimeError, OSError, tf.errors.OpError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        warnings.warn(f"qatbench: C++ fake-quant kernels unavailable ({reason}); using TensorFlow's ops "
                      "(slower, same numbers)", RuntimeWarning, stacklevel=3)
        return None, f"unavailable: {reason}"
    return module, f"loaded {library.parent.name}"


def ops():
    """The kernels' op module (``qatbench_min_max``, ``qatbench_fake_quant_input_gradient``), or None."""
    return _load()[0]


def status() -> str:
    """What this process trains with, for records: 'loaded <key>', 'off (...)' or 'unavailable: <reason>'."""
    return _load()[1]


if __name__ == "__main__":  # ./install.sh: python3 -m harness.case.native_kernels
    module, message = _load()
    print(f"qatbench C++ fake-quant kernels: {message}")
