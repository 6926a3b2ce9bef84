#!/usr/bin/env bash
# Makes sure PostgreSQL, RabbitMQ and Redis answer on 127.0.0.1, starting any that is down with
# the commands from DEVELOPERS.md. URLs in JOBTRAIL_*_URL point elsewhere: those are only checked.
# The servers (name, URL variable, port, start command) come from shared/servers.py, the table
# the CLI and the tests use too.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
[[ -x "$PYTHON" ]] || PYTHON=python3

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for() {  # name host port seconds
  local i
  for ((i = 0; i < $4 * 2; i++)); do
    answers "$2" "$3" && { echo "$1 answers on $2:$3"; return 0; }
    sleep 0.5
  done
  echo "$1 does not answer on $2:$3 after $4 s" >&2
  return 1
}

ensure() {  # name env-var default-port start-command
  local url="${!2:-}"
  if [[ -n "$url" ]]; then
    local hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
    wait_for "$1" "${hostport%%:*}" "${hostport##*:}" 10
    return
  fi
  if answers 127.0.0.1 "$3"; then echo "$1 answers on 127.0.0.1:$3"; return 0; fi
  echo "$1 is down; starting it"
  bash -c "$4" </dev/null || true
  wait_for "$1" 127.0.0.1 "$3" 60
}

ensure_faketime() {  # the clock-skew fault scenarios run workers under libfaketime
  local lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
  [[ -e "$lib" || "$(uname -m)" != x86_64 ]] && return 0
  echo "libfaketime is missing; installing Debian's faketime"
  if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
    apt-get install -y -qq faketime >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq faketime >/dev/null 2>&1; }
  fi
  [[ -e "$lib" ]] || { echo "could not install faketime (apt-get install faketime)" >&2; return 1; }
}

ensure_chromium() {  # the dashboard's browser tests (tests/browser) drive Debian's chromium
  local browser=/usr/bin/chromium
  [[ -x "$browser" ]] && return 0
  echo "chromium is missing; installing Debian's chromium"
  if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1
    }
  fi
  [[ -x "$browser" ]] || { echo "could not install chromium (apt-get install chromium)" >&2; return 1; }
}

status=0
ensure_faketime || status=1
ensure_chromium || status=1
servers=$("$PYTHON" -m shared.servers) || { echo "cannot read shared/servers.py" >&2; exit 1; }
while IFS=$'\t' read -r name variable port start; do
  ensure "$name" "$variable" "$port" "$start" || status=1
done <<< "$servers"
exit $status
