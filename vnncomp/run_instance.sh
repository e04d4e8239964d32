#!/bin/bash
# VNN-COMP harness: run_instance.sh [v1] CATEGORY ONNX VNNLIB RESULTFILE TIMEOUT
# Writes RESULTFILE: first line sat / unsat / unknown / timeout, after sat the
# counterexample ((X_0 v) ... (Y_0 v)). With VNNCOMP_RESULT_WORDS=2021 the first line
# uses the 2021 words instead (unsat -> holds, sat -> violated; no counterexample).
set -uo pipefail
if [ "${1:-}" = "v1" ]; then shift; fi
if [ "$#" -ne 5 ]; then
    echo "usage: run_instance.sh [v1] CATEGORY ONNX VNNLIB RESULTFILE TIMEOUT" >&2
    exit 1
fi
CATEGORY=$1
ONNX=$2
VNNLIB=$3
RESULT=$4
TIMEOUT=$5
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PROFIT_PYTHON:-$REPO/.venv/bin/python}"
ONNX="$(realpath "$ONNX")"
VNNLIB="$(realpath "$VNNLIB")"
RESULT="$(realpath -m "$RESULT")"
echo "running profit on category '$CATEGORY': $ONNX, $VNNLIB, timeout $TIMEOUT s"
cd "$REPO"
"$PYTHON" -m profit vnnlib "$ONNX" "$VNNLIB" --timeout "$TIMEOUT" --out "$RESULT"
STATUS=$?
if [ "$STATUS" -ne 0 ]; then
    echo "error" > "$RESULT"
    exit "$STATUS"
fi
if [ "${VNNCOMP_RESULT_WORDS:-}" = "2021" ]; then
    case "$(head -n 1 "$RESULT")" in
        unsat) echo "holds" > "$RESULT" ;;
        sat) echo "violated" > "$RESULT" ;;
    esac
fi
