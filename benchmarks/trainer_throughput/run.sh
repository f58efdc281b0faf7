#!/usr/bin/env bash
# Create the benchmark's own env when missing, then run the side-by-side throughput benchmark.
# Usage: benchmarks/trainer_throughput/run.sh [--rounds N] [--batches N] [--threads N]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -f "$venv/.installed" ] || [ "$here/requirements.txt" -nt "$venv/.installed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  touch "$venv/.installed"
fi
exec "$venv/bin/python" "$here/run.py" "$@"
