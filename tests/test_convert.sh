#!/usr/bin/env bash
# tools/pt2safetensors.py with PyTorch: config inference, refusals and the
# classifier round trips .pt -> safetensors (verified by prginfo) -> .pt ->
# load_state_dict(strict=True) -> safetensors, bit for bit, also from a classifier
# that finetune wrote (tools/ref_convert.py test).
# Skipped when Debian's /usr/bin/python3 has no torch (apt-get install python3-torch).
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
if ! [ -x "$PY" ] || ! "$PY" -c "import torch, numpy" 2> /dev/null; then
    echo "test_convert: skipped: $PY with torch and numpy is not installed (apt-get install python3-torch)"
    echo "test_convert: 0 passed, 0 failed"
    exit 0
fi
exec "$PY" tools/ref_convert.py test "${BUILD:-build}"
