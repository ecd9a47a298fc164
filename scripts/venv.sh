#!/usr/bin/env bash
# Creates or updates the project-local virtualenv (.venv) with faas's Python requirements and the
# SDK (python/, installed editable).
# Usage: scripts/venv.sh [requirements-file]   (default: python/requirements-test.txt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req=${1:-$root/python/requirements-test.txt}
py=${FAAS_BOOTSTRAP_PYTHON:-python3}
if [ ! -x "$root/.venv/bin/python" ]; then
    "$py" -m venv "$root/.venv"
fi
stamp="$root/.venv/.faas-req-$(cat "$req" "$root/python/requirements.txt" "$root/python/pyproject.toml" | cksum | cut -d' ' -f1)"
if [ ! -e "$stamp" ]; then
    "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    # The SDK (faas-client), editable: the tests and the bench use it as users do.
    "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root/python"
    touch "$stamp"
fi
