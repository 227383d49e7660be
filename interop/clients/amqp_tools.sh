#!/usr/bin/env bash
# The C client (librabbitmq) through Debian's amqp-tools, as shell scripts use them:
# declare a durable queue, publish persistent messages, get them, consume through a
# binding, delete.
set -euo pipefail
url=$AMQP_URL
queue=$RUN_PREFIX.q
name=$(amqp-declare-queue --url="$url" --queue="$queue" --durable)
[ "$name" = "$queue" ] || { echo "declared '$name', not '$queue'"; exit 1; }
for body in one two; do
    amqp-publish --url="$url" --routing-key="$queue" --body="$body" --persistent
done
for body in one two; do
    got=$(timeout 15 amqp-get --url="$url" --queue="$queue")
    [ "$got" = "$body" ] || { echo "amqp-get gave '$got', not '$body'"; exit 1; }
done
if amqp-get --url="$url" --queue="$queue" >/dev/null 2>&1; then
    echo "the queue should be empty"; exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# A server-named queue bound to amq.direct; the command runs once per message (the body
# on its stdin) and the message is acked when it succeeds.
timeout 15 amqp-consume --url="$url" --exchange=amq.direct --routing-key="$RUN_PREFIX" \
    --count=1 -- sh -c "cat > '$out'" &
consumer=$!
# Publish until the consumer's binding is there and it has the message.
for _ in $(seq 200); do
    amqp-publish --url="$url" --exchange=amq.direct --routing-key="$RUN_PREFIX" --body=bound
    [ -s "$out" ] && break
    sleep 0.05
done
wait "$consumer"
[ "$(cat "$out")" = bound ] || { echo "consumed '$(cat "$out")'"; exit 1; }
amqp-delete-queue --url="$url" --queue="$queue" >/dev/null
