#!/usr/bin/env bash
# Benchmark amqpd with the shared amqp-perf load generator, beside RabbitMQ when given.
#
#   tools/bench.sh [--rabbitmq URI,PID] [bench.py options, e.g. --only S1,S2,S4 --repeats 3]
#
# Builds amqp-perf in a temporary folder (needs gcc, make and librabbitmq-dev:
# `apt-get install -y librabbitmq-dev`), starts amqpd from this checkout on a free port
# with a throw-away data folder, runs bench.py with the targets interleaved run by run,
# and stops amqpd. To compare with RabbitMQ, start one on another port first, e.g.
#   RABBITMQ_NODE_PORT=5680 rabbitmq-server -detached
#   tools/bench.sh --rabbitmq amqp://guest:guest@127.0.0.1:5680/%2f,$(pgrep -f beam.smp)
# AMQP_PERF_DIR overrides where the amqp-perf sources are (default ../shared/tools/amqp-perf).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
perf_src=${AMQP_PERF_DIR:-$here/../shared/tools/amqp-perf}
python=${PYTHON:-python3}

targets=()
if [ "${1:-}" = "--rabbitmq" ]; then
    targets+=(--target "rabbitmq=$2")
    shift 2
fi

work=$(mktemp -d)
trap 'kill "$amqpd_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$perf_src"/. "$work/perf"
make -s -C "$work/perf" >/dev/null

"$python" -m amqpd --port 0 --data-dir "$work/data" --log-level info >"$work/amqpd.log" 2>&1 &
amqpd_pid=$!
for _ in $(seq 100); do
    port=$(sed -n 's/.*amqpd ready: accepting AMQP 0-9-1 connections on [^ ]*:\([0-9]*\).*/\1/p' \
        "$work/amqpd.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "${port:-}" ] || { cat "$work/amqpd.log"; echo "amqpd did not start" >&2; exit 1; }

targets+=(--target "amqpd=amqp://guest:guest@127.0.0.1:$port/%2f,$amqpd_pid")
"$work/perf/bench.py" "${targets[@]}" "$@"
