// Lists of queues, exchanges, connections and consumers: one paginated table each, read
// with the API's page parameters (page, page_size, name) and its page object.

import { get, segment } from "./api.js";
import { bytes, count, h, rate } from "./dom.js";

const PAGE_SIZE = 50;
const yes = (flag) => (flag ? "yes" : "");

export function queueLink(vhost, name) {
  return h("a", { href: `#/queues/${segment(vhost)}/${segment(name)}` }, name);
}

const TABLES = {
  queues: {
    title: "Queues",
    path: "/api/queues",
    filter: true,
    columns: [
      ["Name", (q) => queueLink(q.vhost, q.name)],
      ["Virtual host", (q) => q.vhost],
      ["Features", (q) => [q.durable && "durable", q.auto_delete && "auto-delete", q.exclusive && "exclusive"].filter(Boolean).join(" ")],
      ["State", (q) => q.state],
      ["Ready", (q) => count(q.messages_ready), "messages_ready"],
      ["Unacked", (q) => count(q.messages_unacknowledged), "messages_unacknowledged"],
      ["Total", (q) => count(q.messages), "messages"],
      ["Consumers", (q) => count(q.consumers), "consumers"],
      ["Incoming", (q) => rate(q.message_stats?.publish_details?.rate ?? 0), "publish_rate"],
      ["Deliver / get", (q) => rate(q.message_stats?.deliver_get_details?.rate ?? 0), "deliver_get_rate"],
      ["Ack", (q) => rate(q.message_stats?.ack_details?.rate ?? 0), "ack_rate"],
    ],
  },
  exchanges: {
    title: "Exchanges",
    path: "/api/exchanges",
    filter: true,
    columns: [
      ["Name", (e) => e.name || "(AMQP default)"],
      ["Virtual host", (e) => e.vhost],
      ["Type", (e) => e.type],
      ["Features", (e) => [e.durable && "durable", e.auto_delete && "auto-delete", e.internal && "internal"].filter(Boolean).join(" ")],
      ["Arguments", (e) => Object.keys(e.arguments || {}).join(", ")],
    ],
  },
  connections: {
    title: "Connections",
    path: "/api/connections",
    filter: true,
    columns: [
      ["Name", (c) => c.user_provided_name ? `${c.name} (${c.user_provided_name})` : c.name],
      ["User", (c) => c.user],
      ["Virtual host", (c) => c.vhost ?? ""],
      ["Client", (c) => [c.client_properties?.product, c.client_properties?.version].filter(Boolean).join(" ")],
      ["State", (c) => c.state],
      ["TLS", (c) => yes(c.ssl)],
      ["Channels", (c) => count(c.channels), "channels"],
      ["Received", (c) => bytes(c.recv_oct), "recv_oct"],
      ["Sent", (c) => bytes(c.send_oct), "send_oct"],
    ],
  },
  consumers: {
    title: "Consumers",
    path: "/api/consumers",
    filter: false, // consumers have no name to filter on
    columns: [
      ["Consumer tag", (c) => c.consumer_tag],
      ["Queue", (c) => queueLink(c.queue.vhost, c.queue.name)],
      ["Virtual host", (c) => c.queue.vhost],
      ["Channel", (c) => c.channel_details?.name ?? ""],
      ["Ack required", (c) => yes(c.ack_required)],
      ["Exclusive", (c) => yes(c.exclusive)],
      ["Prefetch", (c) => count(c.prefetch_count), "prefetch_count"],
      ["Unacked", (c) => count(c.consumer_unacknowledged), "consumer_unacknowledged"],
    ],
  },
};

export function listView(container, kind) {
  const table = TABLES[kind];
  let page = 1;
  let filterText = "";
  let lastRequest = 0;

  const filter = h("input", {
    type: "search",
    placeholder: "name contains ...",
    "aria-label": "Filter by name",
    oninput: () => {
      filterText = filter.value;
      page = 1;
      refresh();
    },
  });
  const body = h("tbody");
  const summary = h("span");
  const previous = h("button", { type: "button", class: "quiet", onclick: () => { page -= 1; refresh(); } }, "Previous");
  const next = h("button", { type: "button", class: "quiet", onclick: () => { page += 1; refresh(); } }, "Next");
  const head = h(
    "tr",
    {},
    table.columns.map(([title, , numeric]) => h("th", { class: numeric ? "number" : undefined }, title)),
  );

  container.append(
    h("h2", {}, table.title),
    table.filter ? h("div", { class: "toolbar" }, filter) : null,
    h("table", { dataset: { list: kind } }, h("thead", {}, head), body),
    h("div", { class: "pager" }, previous, summary, next),
  );

  async function refresh() {
    const request = ++lastRequest;
    const query = new URLSearchParams({ page, page_size: PAGE_SIZE });
    if (filterText) query.set("name", filterText);
    const result = await get(`${table.path}?${query}`);
    if (request !== lastRequest) return; // a newer request is under way
    if (result.page_count < page && page > 1) {
      page = result.page_count;
      return refresh();
    }
    body.replaceChildren(
      ...result.items.map((item) =>
        h(
          "tr",
          { dataset: { name: item.name ?? item.consumer_tag ?? "" } },
          table.columns.map(([, cell, numeric]) =>
            h("td", { class: numeric ? "number" : undefined, dataset: numeric ? { field: numeric } : undefined }, cell(item)),
          ),
        ),
      ),
    );
    if (result.items.length === 0) {
      body.append(h("tr", {}, h("td", { colspan: String(table.columns.length), class: "note" }, filterText ? "Nothing matches the filter." : `No ${kind}.`)));
    }
    summary.textContent = `page ${result.page} of ${result.page_count} (${count(result.filtered_count)} of ${count(result.total_count)} ${kind})`;
    previous.disabled = result.page <= 1;
    next.disabled = result.page >= result.page_count;
  }

  return { refresh };
}
