// amqplib's promise API, as Node services use it: confirm channel, prefetch, acks, a
// reject requeued then dropped, clean close. Exits non-zero on any surprise.
"use strict";
const amqp = require("amqplib");
const assert = require("assert");

async function main() {
  const url = process.env.AMQP_URL;
  const prefix = process.env.RUN_PREFIX;
  const exchange = `${prefix}.x`;
  const queue = `${prefix}.q`;
  const connection = await amqp.connect(url);
  const channel = await connection.createConfirmChannel();
  await channel.assertExchange(exchange, "fanout", { autoDelete: true });
  await channel.assertQueue(queue, { autoDelete: true });
  await channel.bindQueue(queue, exchange, "");
  for (let n = 0; n < 10; n++) {
    channel.publish(exchange, "", Buffer.from(String(n)), { persistent: false });
  }
  await channel.waitForConfirms();
  await channel.prefetch(2);
  const bodies = [];
  let rejected = false;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out with ${bodies}`)), 15000);
    channel.consume(queue, (message) => {
      const body = message.content.toString();
      if (body === "4" && !rejected) {
        rejected = true;
        channel.reject(message, true);
        return;
      }
      if (body === "4") assert.ok(message.fields.redelivered, "requeued without redelivered");
      if (body === "9") channel.reject(message, false);
      else channel.ack(message);
      bodies.push(body);
      if (bodies.length === 10) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  assert.deepStrictEqual(bodies.slice().sort(), ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
  const { messageCount } = await channel.checkQueue(queue);
  assert.strictEqual(messageCount, 0);
  await channel.close();
  await connection.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
