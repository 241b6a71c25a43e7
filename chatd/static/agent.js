// The agents' page (/agent): the live queue of support conversations, and the conversations
// this agent has opened (joined), with replies.
//
// After every welcome (so after each reconnection too), and when the status filter changes, it
// sends {"type":"queue"}: the reply is the first page of the queue (more pages on "Load more",
// with `before` = the previous reply's `next`), and from then on each change comes as a
// "conversation" frame. A resolved conversation stays in the list (greyed, at the end) until the
// queue is next loaded after the server's [support] resolved_ttl: then the server leaves it out.
// Customers' and agents' display names are shown, but rooms and people are told apart by id.

import { ChatConnection } from "./connection.js";
import { session } from "./login.js";
import { $, composer, describeRemoval, el, formatWait, MessageList, nameElement, Notice, Scroller, StatusBar, sayIn } from "./ui.js";

// How urgent each phase is: waiting for an answer, answered (still open), resolved.
const PHASE_ORDER = { waiting: 0, answered: 1, resolved: 2 };
const QUEUE_PAGE = 50;
const view = {
  desk: $("#desk"),
  queue: $("#queue"),
  queueCount: $("#queue-count"),
  queueEmpty: $("#queue-empty"),
  queueMore: $("#queue-more"),
  filter: $("#queue-filter"),
  resolve: $("#resolve"),
  title: $("#room-title"),
  sub: $("#room-sub"),
  current: $("#current"),
  empty: $("#no-room"),
  older: $("#older"),
  leave: $("#leave"),
  text: $("#text"),
  sidebar: $("#sidebar"),
  toggle: $("#toggle-sidebar"),
};
const notice = new Notice($("#notice"));
const scroller = new Scroller($("#scroller"));
let status = null;
let connection = null;
let conversations = new Map(); // room -> the queue's entry for it
let filter = "all"; // the queue's status filter: all | open | resolved
let next = null; // the cursor for the queue's next page, when there is one
const names = new Map(); // user id -> display name, as last seen in a room's frames
let resolves = 0;
const opened = new Map(); // room -> {list: MessageList, more}
let current = null;

function start(credentials) {
  connection?.stop();
  connection = new ChatConnection(credentials);
  status = status || new StatusBar($("#status"), () => connection.retryNow());
  conversations = new Map();
  opened.clear();
  show(null);
  view.desk.hidden = false;
  view.toggle.hidden = false;

  connection.addEventListener("status", (event) => {
    status.show(event.detail);
    renderPending(current);
  });
  connection.addEventListener("welcome", ({ detail }) => {
    $("#me").textContent = detail.name || detail.user;
    loadQueue();
  });
  connection.addEventListener("fatal", () => {
    view.desk.hidden = true;
    view.toggle.hidden = true;
  });
  connection.addEventListener("frame", ({ detail: frame }) => {
    if (frame.type === "queue") {
      if (frame.status !== filter) return; // an answer for the filter before the last change
      // The first page replaces the list; a next page adds to it.
      if (frame.ref !== "queue-more") conversations = new Map();
      for (const entry of frame.conversations) conversations.set(entry.room, entry);
      next = frame.more ? frame.next : null;
      renderQueue();
      renderHead();
    } else if (frame.type === "conversation") {
      // A live change; one that no longer matches the filter leaves the list.
      if (matches(frame)) conversations.set(frame.room, frame);
      else conversations.delete(frame.room);
      renderQueue();
      if (frame.room === current) renderHead();
    }
  });
  connection.addEventListener("members", ({ detail }) => {
    for (const [id, name] of Object.entries(detail.names)) names.set(id, name);
    renderQueue();
    renderHead();
  });
  connection.addEventListener("reset", ({ detail }) => {
    const room = opened.get(detail.room);
    room.more = detail.more;
    whenShown(detail.room, () => room.list.reset(detail.events), true);
    renderOlder();
  });
  connection.addEventListener("events", ({ detail }) => {
    whenShown(detail.room, () => opened.get(detail.room).list.append(detail.events));
  });
  connection.addEventListener("older", ({ detail }) => {
    const room = opened.get(detail.room);
    room.more = detail.more;
    if (detail.room === current) scroller.keepPosition(() => room.list.prepend(detail.events));
    else room.list.prepend(detail.events);
    renderOlder();
  });
  connection.addEventListener("pending", ({ detail }) => renderPending(detail.room));
  connection.addEventListener("joinfailed", ({ detail }) => {
    notice.show(`Cannot open the conversation ${detail.room}: ${detail.message}`);
    opened.delete(detail.room);
    if (current === detail.room) show(null);
  });
  connection.addEventListener("removed", ({ detail }) => {
    notice.show(describeRemoval(detail, `the conversation ${detail.room}`), { sticky: true });
    opened.delete(detail.room);
    if (current === detail.room) show(null);
  });
  connection.addEventListener("problem", ({ detail }) => {
    if (detail.ref === "queue" && detail.code === "forbidden") notice.show(`This page is for support agents. The server said: ${detail.message}`, { sticky: true });
    else notice.show(detail.message);
  });
  connection.start();
  return connection;
}

function loadQueue(more = false) {
  const frame = { type: "queue", status: filter, limit: QUEUE_PAGE, id: more ? "queue-more" : "queue" };
  if (more) frame.before = next;
  connection.send(frame);
}

function matches(entry) {
  return filter === "all" || entry.status === filter;
}

function phase(entry) {
  if (entry.status === "resolved") return "resolved";
  return entry.waiting_since ? "waiting" : "answered";
}

// Most urgent first, as the server pages them: waiting (longest wait first), then answered,
// then resolved (latest first).
function urgency(a, b) {
  const order = PHASE_ORDER[phase(a)] - PHASE_ORDER[phase(b)];
  if (order) return order;
  if (phase(a) === "waiting") return (a.waiting_since || "").localeCompare(b.waiting_since || "");
  return (b.updated || "").localeCompare(a.updated || "");
}

function statusText(entry) {
  const now = phase(entry);
  if (now === "waiting") return `Waiting ${formatWait(entry.waiting_since)}`;
  return now === "resolved" ? "Resolved" : "Answered";
}

function customerName(entry, room) {
  return entry ? entry.customer_name || entry.customer : room;
}

function agentNames(entry) {
  return (entry.agents || []).map((id) => names.get(id) || id).join(", ");
}

function renderQueue() {
  const entries = [...conversations.values()].sort(urgency);
  const waiting = entries.filter((entry) => phase(entry) === "waiting").length;
  view.queueCount.textContent = entries.length ? `(${waiting} waiting)` : "";
  view.queueEmpty.hidden = entries.length > 0;
  view.queueEmpty.textContent = filter === "all" ? "No conversations yet." : `No ${filter} conversations.`;
  view.queueMore.hidden = next === null;
  // The list is rebuilt on every change: keep the keyboard focus on the same conversation.
  const focused = view.queue.contains(document.activeElement) ? document.activeElement.dataset.room : null;
  view.queue.replaceChildren(
    ...entries.map((entry) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "queue-item",
            dataset: { room: entry.room, status: entry.status },
            "aria-current": entry.room === current ? "true" : false,
            onclick: () => open(entry.room),
          },
          nameElement("span", { class: "customer" }, customerName(entry), entry.customer),
          el("span", { class: `pill ${phase(entry)}` }, statusText(entry)),
          el("span", { class: "last" }, entry.last ? `${entry.last.name || entry.last.from}: ${entry.last.text}` : "No message yet"),
          entry.agents?.length ? el("span", { class: "agents" }, `With ${agentNames(entry)}`) : null,
        ),
      ),
    ),
  );
  if (focused) view.queue.querySelector(`[data-room="${CSS.escape(focused)}"]`)?.focus();
}

function open(name) {
  if (!opened.has(name)) {
    const list = new MessageList({
      me: () => connection.user ?? "you",
      myName: () => connection.name ?? "you",
      label: `Messages with ${customerName(conversations.get(name), name)}`,
    });
    opened.set(name, { list, more: false });
    connection.join(name);
  }
  show(name);
  view.sidebar.classList.remove("open");
  view.toggle.setAttribute("aria-expanded", "false");
  view.text.focus();
}

function show(name) {
  current = name;
  const room = opened.get(name);
  view.empty.hidden = Boolean(room);
  view.leave.hidden = !room;
  view.text.disabled = !room;
  if (room) {
    scroller.update(() => view.current.replaceChildren(room.list.node), true);
    renderPending(name);
  } else {
    view.current.replaceChildren();
  }
  renderHead();
  renderOlder();
  renderQueue();
}

function renderHead() {
  const entry = conversations.get(current);
  const customer = customerName(entry, current);
  view.title.textContent = current ? customer : "Support desk";
  view.title.title = entry && customer !== entry.customer ? entry.customer : "";
  view.sub.textContent = entry ? `${statusText(entry)}${entry.agents?.length ? ` · with ${agentNames(entry)}` : ""}` : "";
  view.text.placeholder = current ? `Reply to ${customer}` : "Pick a conversation";
  // Resolving is for an open conversation; the button comes back when the customer writes.
  view.resolve.hidden = !opened.has(current) || entry?.status !== "open";
  view.resolve.disabled = false;
}

function renderOlder() {
  view.older.hidden = !opened.get(current)?.more;
}

function renderPending(name) {
  const room = opened.get(name);
  if (!room || !connection) return;
  whenShown(name, () => room.list.setPending(connection.pendingIn(name), Boolean(connection.welcome)));
}

function whenShown(name, change, force = false) {
  if (name === current) scroller.update(change, force);
  else change();
}

view.leave.addEventListener("click", () => {
  if (!current) return;
  connection.leave(current);
  opened.delete(current);
  show(null);
});

view.older.addEventListener("click", () => connection.loadOlder(current));

// The server writes a `status` event to the room and sends the new queue entry; until then
// the button stays disabled.
view.resolve.addEventListener("click", () => {
  if (!current || !connection?.welcome) return;
  view.resolve.disabled = true;
  connection.send({ type: "resolve", room: current, id: `resolve-${++resolves}` });
});

view.filter.addEventListener("change", () => {
  filter = view.filter.value;
  conversations = new Map();
  next = null;
  renderQueue();
  if (connection?.welcome) loadQueue();
});

view.queueMore.addEventListener("click", () => next !== null && connection?.welcome && loadQueue(true));

$(".conversation").addEventListener("click", () => {
  view.sidebar.classList.remove("open");
  view.toggle.setAttribute("aria-expanded", "false");
});

view.toggle.addEventListener("click", () => {
  const isOpen = view.sidebar.classList.toggle("open");
  view.toggle.setAttribute("aria-expanded", String(isOpen));
});

composer($("#composer"), view.text, (text) => sayIn(connection, notice, current, text));

// "Waiting 4 min" ages while nothing happens: repaint the queue now and then.
setInterval(() => conversations.size && renderQueue(), 30000);

session($("#login"), start);
