// The overview: object and message totals, and message-rate charts from /api/overview
// samples kept here in the browser (the API gives the current rates only).

import { drawChart } from "./chart.js";
import { count, h, rate } from "./dom.js";

const HISTORY_MAX = 180; // samples kept: 15 minutes at RabbitMQ's 5 s interval
const history = [];
let latest = null;

const RATE_LINES = [
  { label: "Publish", color: "#2f6f4f", value: (s) => s.publish },
  { label: "Deliver / get", color: "#2b6cb0", value: (s) => s.deliverGet },
  { label: "Ack", color: "#c05621", value: (s) => s.ack },
];
const QUEUED_LINES = [
  { label: "Ready", color: "#2b6cb0", value: (s) => s.ready },
  { label: "Unacked", color: "#c05621", value: (s) => s.unacked },
  { label: "Total", color: "#6b7280", value: (s) => s.messages },
];

const rateOf = (stats, name) => stats?.[`${name}_details`]?.rate ?? 0;

export function recordOverview(overview) {
  latest = overview;
  const stats = overview.message_stats || {};
  const queued = overview.queue_totals || {};
  history.push({
    t: Date.now(),
    publish: rateOf(stats, "publish"),
    deliverGet: rateOf(stats, "deliver_get"),
    ack: rateOf(stats, "ack"),
    messages: queued.messages ?? 0,
    ready: queued.messages_ready ?? 0,
    unacked: queued.messages_unacknowledged ?? 0,
  });
  if (history.length > HISTORY_MAX) history.splice(0, history.length - HISTORY_MAX);
}

export function clearHistory() {
  history.length = 0;
  latest = null;
}

function chartCard(title, id, lines) {
  return h(
    "section",
    { class: "card chart" },
    h("h3", {}, title),
    h("canvas", { id, role: "img", "aria-label": title }),
    h("div", { class: "legend" }, lines.map((line) => h("span", { style: `--swatch: ${line.color}` }, line.label))),
  );
}

// The legend names each line with its latest value: "Publish 12.5/s".
function drawCard(canvas, lines, format) {
  drawChart(canvas, history, lines, format);
  const last = history[history.length - 1];
  const labels = canvas.parentElement.querySelectorAll(".legend span");
  lines.forEach((line, index) => {
    labels[index].textContent = last ? `${line.label} ${format(line.value(last))}` : line.label;
  });
}

function total(label, key) {
  return h("div", { class: "total" }, h("div", { class: "figure", dataset: { total: key } }), h("div", { class: "label" }, label));
}

export function overviewView(container) {
  const alarms = h("p", { class: "error card", role: "alert", hidden: true });
  const about = h("p", { class: "note" });
  const listeners = h("tbody");
  container.append(
    h("h2", {}, "Overview"),
    alarms,
    h(
      "div",
      { class: "totals" },
      total("Connections", "connections"),
      total("Channels", "channels"),
      total("Exchanges", "exchanges"),
      total("Queues", "queues"),
      total("Consumers", "consumers"),
      total("Messages", "messages"),
      total("Ready", "messages_ready"),
      total("Unacked", "messages_unacknowledged"),
    ),
    h(
      "div",
      { class: "charts" },
      chartCard("Message rates (per second)", "chart-rates", RATE_LINES),
      chartCard("Queued messages", "chart-queued", QUEUED_LINES),
    ),
    h(
      "section",
      { class: "card" },
      h("h3", {}, "Listeners"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Protocol"), h("th", {}, "Address"), h("th", { class: "number" }, "Port"))), listeners),
    ),
    about,
  );

  function render() {
    if (!latest) return;
    const totals = { ...latest.object_totals, ...latest.queue_totals };
    for (const cell of container.querySelectorAll("[data-total]")) cell.textContent = count(totals[cell.dataset.total] ?? 0);
    const active = latest.alarms || [];
    alarms.hidden = active.length === 0;
    alarms.textContent = `Resource alarm in effect: ${active.join(", ")}. Publishers are blocked.`;
    listeners.replaceChildren(
      ...(latest.listeners || []).map((l) => h("tr", {}, h("td", {}, l.protocol), h("td", {}, l.ip_address), h("td", { class: "number" }, String(l.port)))),
    );
    about.textContent = `${latest.product_name} ${latest.product_version} on ${latest.node}; rates sampled every ${latest.sample_interval_s} s.`;
    drawCard(container.querySelector("#chart-rates"), RATE_LINES, rate);
    drawCard(container.querySelector("#chart-queued"), QUEUED_LINES, count);
    container.dataset.samples = String(history.length);
  }

  render();
  return { refresh: async () => render(), onResize: render };
}
