#!/bin/bash
# VNN-COMP harness: prepare_instance.sh [v1] CATEGORY ONNX VNNLIB
# Checks that profit can load the network (no analysis). Exit code 0 = ready.
set -euo pipefail
if [ "${1:-}" = "v1" ]; then shift; fi
if [ "$#" -ne 3 ]; then
    echo "usage: prepare_instance.sh [v1] CATEGORY ONNX VNNLIB" >&2
    exit 1
fi
CATEGORY=$1
ONNX=$2
VNNLIB=$3
ONNX="$(realpath "$ONNX")"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PROFIT_PYTHON:-$REPO/.venv/bin/python}"
echo "preparing profit for category '$CATEGORY': $ONNX, $VNNLIB"
[ -r "$VNNLIB" ] || { echo "cannot read $VNNLIB" >&2; exit 1; }
cd "$REPO"
"$PYTHON" -m profit info "$ONNX" > /dev/null
