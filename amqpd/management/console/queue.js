// One queue: its figures, a peek at its messages (taken and requeued), a publish form
// and purge.

import { ApiError, get, post, remove, segment } from "./api.js";
import { count, h, json, rate } from "./dom.js";

const PEEK_BYTES_MAX = 50000;

function status(element, kind, text) {
  element.className = `status ${kind}`;
  element.textContent = text;
  element.hidden = false;
}

function failed(element, error) {
  status(element, "error", error instanceof ApiError ? `${error.status || "Error"}: ${error.reason}` : String(error));
}

function figure(label, field) {
  return [h("dt", {}, label), h("dd", { dataset: { field } })];
}

function messageView(message, index) {
  const details = [
    `#${index + 1}`,
    `exchange ${message.exchange || "(AMQP default)"}`,
    `routing key ${message.routing_key}`,
    `${count(message.payload_bytes)} bytes`,
    message.payload_encoding === "base64" ? "binary, shown as base64" : null,
    message.redelivered ? "redelivered" : null,
  ].filter(Boolean);
  return h(
    "article",
    { class: "message" },
    h("header", {}, details.join(" · ")),
    h("pre", { class: "payload" }, message.payload),
    h("pre", { class: "properties" }, json(message.properties)),
  );
}

export function queueView(container, vhost, name) {
  const path = `/api/queues/${segment(vhost)}/${segment(name)}`;

  // Figures.
  const figures = h(
    "dl",
    { class: "figures" },
    figure("Messages", "messages"),
    figure("Ready", "messages_ready"),
    figure("Unacked", "messages_unacknowledged"),
    figure("Consumers", "consumers"),
    figure("Incoming", "publish_rate"),
    figure("Deliver / get", "deliver_get_rate"),
    figure("Ack", "ack_rate"),
    figure("State", "state"),
    figure("Features", "features"),
    figure("Arguments", "arguments"),
  );
  const purgeStatus = h("p", { class: "status", role: "status", hidden: true });
  const purge = h("button", { type: "button", class: "danger", onclick: purgeQueue }, "Purge messages");

  // Peek.
  const peekCount = h("input", { type: "number", name: "count", min: "1", max: "100", value: "5" });
  const peekStatus = h("p", { class: "status", role: "status", hidden: true });
  const peeked = h("div", { class: "messages" });
  const peekForm = h(
    "form",
    { class: "stack", onsubmit: peek },
    h("div", { class: "row" }, h("label", {}, "Messages", peekCount), h("button", { type: "submit" }, "Peek")),
    h("p", { class: "note" }, "Peeking takes messages and requeues them: they come back marked redelivered."),
  );

  // Publish.
  const exchange = h("select", { name: "exchange" }, h("option", { value: "" }, "(AMQP default)"));
  const routingKey = h("input", { name: "routing_key", value: name });
  const persistent = h("input", { type: "checkbox", name: "persistent", checked: true });
  const contentType = h("input", { name: "content_type", placeholder: "text/plain" });
  const headers = h("textarea", { name: "headers", rows: "2", placeholder: '{"key": "value"}' });
  const payload = h("textarea", { name: "payload", rows: "4" });
  const publishStatus = h("p", { class: "status", role: "status", hidden: true });
  const publishForm = h(
    "form",
    { class: "stack", onsubmit: publish },
    h("div", { class: "row" }, h("label", {}, "Exchange", exchange), h("label", {}, "Routing key", routingKey)),
    h("div", { class: "row" }, h("label", {}, "Content type", contentType), h("label", { class: "inline" }, persistent, "Persistent")),
    h("label", {}, "Headers (JSON)", headers),
    h("label", {}, "Payload", payload),
    h("div", {}, h("button", { type: "submit" }, "Publish message")),
  );

  container.append(
    h("p", { class: "note" }, h("a", { href: "#/queues" }, "Queues"), ` · virtual host ${vhost}`),
    h("h2", {}, `Queue ${name}`),
    h(
      "div",
      { class: "columns" },
      h("section", { class: "card" }, h("h3", {}, "Figures"), figures, h("p", {}, purge), purgeStatus),
      h("section", { class: "card" }, h("h3", {}, "Publish a message"), publishForm, publishStatus),
    ),
    h("section", { class: "card" }, h("h3", {}, "Peek at messages"), peekForm, peekStatus, peeked),
  );

  function show(queue) {
    const stats = queue.message_stats || {};
    const values = {
      messages: count(queue.messages),
      messages_ready: count(queue.messages_ready),
      messages_unacknowledged: count(queue.messages_unacknowledged),
      consumers: count(queue.consumers),
      publish_rate: rate(stats.publish_details?.rate ?? 0),
      deliver_get_rate: rate(stats.deliver_get_details?.rate ?? 0),
      ack_rate: rate(stats.ack_details?.rate ?? 0),
      state: queue.state,
      features: [queue.durable && "durable", queue.auto_delete && "auto-delete", queue.exclusive && "exclusive"].filter(Boolean).join(" "),
      arguments: Object.keys(queue.arguments || {}).length ? json(queue.arguments) : "none",
    };
    for (const cell of figures.querySelectorAll("[data-field]")) cell.textContent = values[cell.dataset.field];
  }

  async function refresh() {
    show(await get(path));
  }

  async function loadExchanges() {
    const exchanges = await get(`/api/exchanges/${segment(vhost)}?columns=name,type`);
    for (const each of exchanges) {
      if (each.name) exchange.append(h("option", { value: each.name }, `${each.name} (${each.type})`));
    }
  }

  async function peek(event) {
    event.preventDefault();
    peekStatus.hidden = true;
    try {
      const messages = await post(`${path}/get`, {
        count: Number(peekCount.value) || 1,
        ackmode: "ack_requeue_true",
        encoding: "auto",
        truncate: PEEK_BYTES_MAX,
      });
      peeked.replaceChildren(...messages.map(messageView));
      status(peekStatus, "ok", messages.length ? `${messages.length} message(s), requeued.` : "The queue is empty.");
      await refresh();
    } catch (error) {
      failed(peekStatus, error);
    }
  }

  async function publish(event) {
    event.preventDefault();
    publishStatus.hidden = true;
    const properties = { delivery_mode: persistent.checked ? 2 : 1 };
    if (contentType.value) properties.content_type = contentType.value;
    if (headers.value.trim()) {
      try {
        properties.headers = JSON.parse(headers.value);
      } catch (error) {
        status(publishStatus, "error", `Headers are not JSON: ${error.message}`);
        return;
      }
    }
    try {
      const result = await post(`/api/exchanges/${segment(vhost)}/${segment(exchange.value || "amq.default")}/publish`, {
        routing_key: routingKey.value,
        payload: payload.value,
        payload_encoding: "string",
        properties,
      });
      if (result.routed) status(publishStatus, "ok", "Message published.");
      else status(publishStatus, "warn", "Message published, but not routed to any queue.");
      await refresh();
    } catch (error) {
      failed(publishStatus, error);
    }
  }

  async function purgeQueue() {
    if (!window.confirm(`Purge every ready message of queue ${name}?`)) return;
    try {
      await remove(`${path}/contents`);
      status(purgeStatus, "ok", "Queue purged.");
      peeked.replaceChildren();
      await refresh();
    } catch (error) {
      failed(purgeStatus, error);
    }
  }

  loadExchanges().catch((error) => failed(publishStatus, error));
  return { refresh };
}
