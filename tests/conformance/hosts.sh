#!/usr/bin/env bash
# SageMaker-like hosts on this machine: algo-1, and optionally algo-2, each in a network namespace of its own (its own
# loopback and ports: the MXNet toolkit's scheduler takes port 8000 on algo-1), joined by a veth pair
# (10.213.0.1 <-> 10.213.0.2), with a private /etc/hosts that names them (the training toolkit waits until every
# host name resolves). The caller runs this as root inside
#   unshare --mount --net --pid --fork --kill-child --mount-proc
# so that the bind mount, the links and every process end with it.
#   hosts.sh WORK_DIR ALGO1_SCRIPT [ALGO2_SCRIPT]
# Each script runs with bash, its output in WORK_DIR/<host>.out; WORK_DIR/rc gets the exit status of each, in order.
set -euo pipefail
work=$1 one=$2 two=${3:-}
names="10.213.0.1 algo-1"
[ -n "$two" ] && names="$names
10.213.0.2 algo-2"
printf '127.0.0.1 localhost\n%s\n' "$names" > "$work/hosts"
mount --bind "$work/hosts" /etc/hosts
ip link set lo up
ip link add dlf0 type veth peer name dlf1
ip addr add 10.213.0.1/24 dev dlf0
pids=()
if [ -n "$two" ]; then
  # algo-2: a nested network namespace; its end of the pair is moved in once that namespace exists (it says so)
  unshare --net bash -c 'touch "$1/algo-2.netns"; until ip link show dlf1 >/dev/null 2>&1; do sleep 0.05; done
    ip link set lo up && ip addr add 10.213.0.2/24 dev dlf1 && ip link set dlf1 up && exec bash "$0"' "$two" "$work" \
    > "$work/algo-2.out" 2>&1 &
  algo2=$!
  until [ -e "$work/algo-2.netns" ]; do sleep 0.05; done
  ip link set dlf1 netns "$algo2"
fi
ip link set dlf0 up
bash "$one" > "$work/algo-1.out" 2>&1 &
pids=("$!" ${algo2:+"$algo2"})
codes=()
for pid in "${pids[@]}"; do
  rc=0
  wait "$pid" || rc=$?
  codes+=("$rc")
done
echo "${codes[*]}" > "$work/rc"
