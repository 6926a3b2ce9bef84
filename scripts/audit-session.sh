#!/usr/bin/env bash
# A real audit session against a running system (own database, prefix, port); output pasted into docs/audit.md
set -u
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH COLUMNS=100
DB=jobtrail_auditdoc
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres
export JOBTRAIL_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/$DB
export JOBTRAIL_TOPOLOGY_PREFIX=jt-auditdoc JOBTRAIL_REDIS_PREFIX=jt-auditdoc
export JOBTRAIL_SUBMITTER_PORT=18432 JOBTRAIL_API_URL=http://127.0.0.1:18432
export JOBTRAIL_CHECKPOINT_INTERVAL_S=2 JOBTRAIL_CHECKPOINT_FILE=$PWD/.jobtrail/session/checkpoints.jsonl
export JOBTRAIL_CHECKPOINT_KEY=auditor-secret JOBTRAIL_RETRY_BASE_S=0.5
mkdir -p .jobtrail/session; rm -f .jobtrail/session/checkpoints.jsonl
redis-cli --scan --pattern 'jt-auditdoc*' | xargs -r redis-cli unlink >/dev/null
jobtrail up --workers 1 > .jobtrail/session/up.log 2>&1 &
UP=$!
for i in $(seq 60); do curl -sf $JOBTRAIL_API_URL/readyz >/dev/null && break; sleep 0.5; done
run() { echo "\$ $*"; "$@" 2>&1; rc=$?; echo "(exit code $rc)"; echo; return $rc; }
J1=$(jobtrail submit test.flaky --payload '{"fail_times": 1}')
for i in $(seq 40); do jobtrail submit cpu.hash --payload "{\"text\": \"doc $i\"}" >/dev/null; done
sleep 4
echo "J1=$J1"
run jobtrail audit $J1
T=$(jobtrail audit $J1 --format jsonl | sed -n 4p | python -c 'import json,sys; print(json.load(sys.stdin)["timestamp"])')
run jobtrail state $J1 --at $T
run jobtrail checkpoint
sleep 3
echo '$ tail -1 $JOBTRAIL_CHECKPOINT_FILE'; tail -1 $JOBTRAIL_CHECKPOINT_FILE; echo
echo "\$ jobtrail audit $J1 --format jsonl | sed -n 3p"; jobtrail audit $J1 --format jsonl | sed -n 3p; echo
run jobtrail verify
TAMPER="UPDATE jobtrail_events SET state = convert_to(replace(convert_from(state, 'UTF8'), '\"worker-', '\"intruder-'), 'UTF8') WHERE originator_id = '$J1' AND originator_version = 3"
echo '$ psql -c "UPDATE jobtrail_events SET ... WHERE originator_id = '"'"'$J1'"'"' AND originator_version = 3"   # as the owner, no maintenance switch'
psql -h 127.0.0.1 -U postgres -d $DB -c "$TAMPER" 2>&1
echo
echo '$ psql   # the attacker owns the database: switches the trigger off for the transaction'
psql -h 127.0.0.1 -U postgres -d $DB -c "BEGIN; SET LOCAL jobtrail.maintenance = 'on'; $TAMPER; COMMIT;" 2>&1
echo
run jobtrail verify --no-redis
run jobtrail replay
run jobtrail verify --no-log
kill -TERM $UP; wait $UP
redis-cli --scan --pattern "jt-auditdoc*" | xargs -r redis-cli unlink >/dev/null
python -c "from tests.services import delete_topology; delete_topology('amqp://guest:guest@127.0.0.1:5672/', 'jt-auditdoc')"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres

