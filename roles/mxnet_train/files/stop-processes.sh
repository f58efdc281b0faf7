#!/bin/sh
# Stop the training processes recorded in PID_DIR/*.pid ("<pid> <start time>", written by the role just
# before it execs each process). A pid only counts while its start time still matches, so a recycled pid
# is never touched. Children (data loader workers) go first. Prints one "stopped" line per process.
set -u
pid_dir=${1:?usage: stop-processes.sh PID_DIR}
[ -d "$pid_dir" ] || exit 0

start_time() {
    # Field 22 of /proc/PID/stat; the command name (field 2) may hold spaces, so cut after its ')'.
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

alive() {
    [ -n "$2" ] && [ "$(start_time "$1")" = "$2" ]
}

for file in "$pid_dir"/*.pid; do
    [ -e "$file" ] || continue
    read -r pid started < "$file" || true
    if [ -n "${pid:-}" ] && alive "$pid" "${started:-}"; then
        pkill -TERM -P "$pid" 2>/dev/null
        kill -TERM "$pid" 2>/dev/null
        tries=0
        while alive "$pid" "$started" && [ "$tries" -lt 20 ]; do
            sleep 0.5
            tries=$((tries + 1))
        done
        if alive "$pid" "$started"; then
            pkill -KILL -P "$pid" 2>/dev/null
            kill -KILL "$pid" 2>/dev/null
        fi
        echo "stopped $(basename "$file" .pid) (pid $pid)"
    fi
    rm -f "$file"
done
exit 0
