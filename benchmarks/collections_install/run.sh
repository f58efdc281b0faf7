#!/usr/bin/env bash
# The controller's collections: the whole `ansible` package (48 collections) against ansible-core plus the five
# pinned in requirements.yml (scripts/install-collections), side by side in one run, each into a fresh venv that
# already has ansible-core, both byte-compiled as make does (uv --compile-bytecode / compileall), warm caches (one
# untimed round first). Prints the wall time and the installed size of each, and the ratios.
#   benchmarks/collections_install/run.sh [rounds]   (from the project root, after `make venv`)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
uv="$root/.venv/bin/uv"
rounds=${1:-3}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
core=$(grep -E '^ansible-core==' "$root/requirements/controller.txt")
release=12.3.0   # the `ansible` release that bundles the pinned versions (scripts/install-collections)

fresh() { rm -rf "$1"; python3 -m venv "$1"; "$uv" pip install -q --python "$1/bin/python" "$core" pyyaml pip; }
whole() { "$uv" pip install -q --compile-bytecode --python "$1/bin/python" "ansible==$release"; }
pinned() { "$1/bin/python" "$root/scripts/install-collections" --python "$1/bin/python" --ansible-release "$release" \
             >/dev/null && "$1/bin/python" -m compileall -q "$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ansible_collections" >/dev/null || true; }
size() { du -sm "$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ansible_collections" | cut -f1; }
timed() { local s; s=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $s" | bc; }

fresh "$work/a"; whole "$work/a"; fresh "$work/b"; pinned "$work/b"        # warm the caches
ta=(); tb=()
for _ in $(seq "$rounds"); do
  fresh "$work/a"; ta+=("$(timed whole "$work/a")")
  fresh "$work/b"; tb+=("$(timed pinned "$work/b")")
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ma=$(med "${ta[@]}"); mb=$(med "${tb[@]}"); sa=$(size "$work/a"); sb=$(size "$work/b")
echo "whole ansible $release: ${ta[*]} s (median $ma s), ansible_collections ${sa} MB"
echo "requirements.yml (5 collections): ${tb[*]} s (median $mb s), ansible_collections ${sb} MB"
echo "time ratio whole/pinned: $(echo "scale=2; $ma / $mb" | bc)x; size ratio: $(echo "scale=1; $sa / $sb" | bc)x"
