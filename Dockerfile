# The image deploy/ runs (Kubernetes Jobs, Slurm through Apptainer): the repository with ./install.sh run,
# so the pinned Python stack, the MiniLM weights, Fashion-MNIST (Debian's dataset-fashion-mnist) and the
# C++ fake-quant kernels are inside it.
#   docker build -t qatbench:latest .                                  # CPU
#   docker build -t qatbench:gpu --build-arg QATBENCH_GPU=1 .          # ./install.sh --gpu: tensorflow[and-cuda]
# Not built on the development machine (no Docker engine there): tests/test_deploy.py parses this file and
# the ci workflow's deploy-files job builds it.

# Debian-based, not -slim: install.sh builds the kernels with the system g++, which the full image has, and
# apt-get installs dataset-fashion-mnist from Debian.
FROM python:3.11-bookworm

# 0: CPU TensorFlow; 1: ./install.sh --gpu (TensorFlow's CUDA wheels; the host needs NVIDIA's driver).
ARG QATBENCH_GPU=0

# The kernels are keyed by TensorFlow, compiler and machine and loaded from QATBENCH_KERNELS: a fixed path
# so that the user the image runs as finds what root built (~/.cache would differ per user).
# No pip cache: it would only make the image bigger.
ENV QATBENCH_KERNELS=/opt/qatbench/kernels \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

WORKDIR /work/qatbench
COPY . .

# As root: install.sh installs Fashion-MNIST with apt only when it runs as root. install.sh only warns when
# the data or the kernels are missing; the image must have both, so the build checks them.
RUN if [ "$QATBENCH_GPU" = 1 ]; then ./install.sh --gpu; else ./install.sh; fi \
    && test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
    && python3 -c "import sys; from harness.case import native_kernels as k; s = k.status(); print(s); sys.exit(not s.startswith('loaded'))" \
    && chmod -R a+rX "$QATBENCH_KERNELS" \
    && rm -rf /var/lib/apt/lists/*

# Runs as an ordinary user (uid 1000; the Kubernetes pods set fsGroup 1000 so the shared volume is writable).
# The repository folder is theirs so a local run can write results/ and .qatbench-cache/ next to it.
RUN useradd --create-home --uid 1000 qatbench && chown -R qatbench /work/qatbench
USER qatbench

CMD ["python3", "-m", "pytest", "benchmarks", "-q"]
