#!/usr/bin/env bash
# Makes sure PostgreSQL, RabbitMQ and Redis answer on 127.0.0.1, starting any that is down with
# the commands from DEVELOPERS.md. URLs in JOBTRAIL_*_URL point elsewhere: those are only checked.
set -uo pipefail

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

start_postgres() { pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start; }
start_redis() {
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
start_rabbitmq() { rabbitmq-server -detached; }

ensure() {  # name env-var default-port starter
  local url="${!2:-}"
  if [[ -n "$url" ]]; then
    local hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
    wait_for "$1" "${hostport%%:*}" "${hostport##*:}" 10
    return
  fi
  if answers 127.0.0.1 "$3"; then echo "$1 answers on 127.0.0.1:$3"; return 0; fi
  echo "$1 is down; starting it"
  $4 || true
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

status=0
ensure_faketime || status=1
ensure PostgreSQL JOBTRAIL_POSTGRES_URL 5432 start_postgres || status=1
ensure Redis JOBTRAIL_REDIS_URL 6379 start_redis || status=1
ensure RabbitMQ JOBTRAIL_AMQP_URL 5672 start_rabbitmq || status=1
exit $status
