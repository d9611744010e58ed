# shellcheck shell=bash
# lib.sh: helpers the integration scripts source (bounded waits; nothing here starts a process).

# wait_for FILE REGEX [SECONDS]: bounded poll until FILE has a line matching REGEX.
wait_for() {
    local file=$1 re=$2 secs=${3:-15}
    for _ in $(seq 1 $((secs * 20))); do
        grep -qE -- "$re" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
# wait_exit PID [SECONDS]: bounded wait for a child to exit; sets RC to its status, or
# "timeout" (not in a subshell: only the parent shell can collect the status).
wait_exit() {
    local pid=$1 secs=${2:-15}
    RC=timeout
    for _ in $(seq 1 $((secs * 20))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            # shellcheck disable=SC2034 # RC is the caller's
            RC=$?
            return 0
        fi
        sleep 0.05
    done
}
