#!/usr/bin/env bash
# Serve the lab to a class from N Streamlit processes behind nginx (sticky sessions), with one
# trainer apart from them, all sharing one job queue (FMNIST_QUEUE_DB, default: the cache
# folder's SQLite file). Usage: scripts/serve_class.sh [N] [ADDRESS:PORT] [FIRST]
# (default 2 127.0.0.1:8500 8601: the processes listen on 127.0.0.1:FIRST, FIRST+1, ...)
# The other FMNIST_* settings (FMNIST_ADMIN_TOKEN, FMNIST_MAX_JOBS, ...) are read as by run_app.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
processes=${1:-2}
listen=${2:-127.0.0.1:8500}
first=${3:-8601}
if ! [[ "$processes" =~ ^[0-9]+$ ]] || [ "$processes" -lt 1 ] || [ "$processes" -gt 32 ]; then
  echo "serve_class: N: '$processes' is not a whole number from 1 to 32" >&2; exit 2
fi
if ! [[ "$first" =~ ^[0-9]+$ ]] || [ "$first" -lt 1024 ] || [ "$first" -gt $((65536 - processes)) ]; then
  echo "serve_class: FIRST: '$first' is not a port from 1024 to $((65536 - processes)) for $processes processes" >&2; exit 2
fi
if ! [[ "$listen" =~ ^[^:]+:[0-9]+$ ]] || [ "${listen##*:}" -lt 1 ] || [ "${listen##*:}" -gt 65535 ]; then
  echo "serve_class: ADDRESS:PORT: '$listen' is not an address and a port (e.g. 127.0.0.1:8500)" >&2; exit 2
fi
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "serve_class: nginx is not installed (apt-get install nginx-light)" >&2; exit 2; }
scripts/setup.sh
queue_db=${FMNIST_QUEUE_DB:-}
if [ "${queue_db,,}" = memory ]; then
  echo "serve_class: FMNIST_QUEUE_DB: 'memory' gives each process a queue of its own; unset it (the cache folder's shared queue)" >&2; exit 2
fi
export FMNIST_CLASS=${FMNIST_CLASS:-1}  # a class: jobs have owners, only they (or an admin) stop them
FMNIST_WORKERS=0 .venv/bin/python -m fmnist_core settings >/dev/null  # as the servers will read them
# Every address free before anything starts (a second serve_class.sh, another server).
ports="${listen##*:} $(seq -s ' ' "$first" $((first + processes - 1)))"
.venv/bin/python - "${listen%:*}" $ports <<'PY' || exit 2
import socket, sys
host = sys.argv[1]
for port in sys.argv[2:]:
    with socket.socket() as probe:
        try:
            probe.bind((host if port == sys.argv[2] else "127.0.0.1", int(port)))
        except OSError as error:
            sys.exit(f"serve_class: port {port} is taken ({error.strerror}): is the class already served?")
PY
run=$(mktemp -d "${TMPDIR:-/tmp}/fmnist-class.XXXXXX")
pids=()
names=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
trap 'echo "serve_class: stopping (logs in $run)" >&2; exit 0' INT TERM
.venv/bin/python -m fmnist_core worker >"$run/worker.log" 2>&1 &
pids+=($!)
names+=("the trainer (worker.log)")
servers=""
for i in $(seq 1 "$processes"); do
  port=$((first + i - 1))
  FMNIST_WORKERS=0 .venv/bin/streamlit run app.py --server.address 127.0.0.1 --server.port "$port" \
    --server.headless true >"$run/server$i.log" 2>&1 &
  pids+=($!)
  names+=("server $i on port $port (server$i.log)")
  servers+="        server 127.0.0.1:$port;"$'\n'
done
sed -e "s|@RUN@|$run|g" -e "s|@LISTEN@|$listen|" deploy/nginx-class.conf.in |
  awk -v servers="$servers" '{ if ($0 == "@SERVERS@") printf "%s", servers; else print }' >"$run/nginx.conf"
mkdir -p "$run"/{body,proxy,fastcgi,uwsgi,scgi}
"$(command -v nginx || echo /usr/sbin/nginx)" -p "$run" -c "$run/nginx.conf" &
pids+=($!)
names+=("nginx (error.log)")
echo "serve_class: $processes processes and a trainer behind http://$listen (logs in $run); Ctrl+C to stop" >&2
wait -n || true
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    echo "serve_class: ${names[$i]} ended; stopping the rest (its log in $run)" >&2
  fi
done
exit 1
