// The agents' page (/agent): the live queue of support conversations, and the conversations
// this agent has opened (joined), with replies.
//
// After every welcome (so after each reconnection too) it sends {"type":"queue"}: the reply
// lists every conversation, and from then on each change comes as a "conversation" frame.

import { ChatConnection } from "./connection.js";
import { session } from "./login.js";
import { $, composer, el, formatWait, MessageList, Notice, Scroller, StatusBar, sayIn } from "./ui.js";

const STATUS_ORDER = { waiting: 0, new: 1, answered: 2 };
const view = {
  desk: $("#desk"),
  queue: $("#queue"),
  queueCount: $("#queue-count"),
  queueEmpty: $("#queue-empty"),
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
    connection.send({ type: "queue", id: "queue" });
  });
  connection.addEventListener("fatal", () => {
    view.desk.hidden = true;
    view.toggle.hidden = true;
  });
  connection.addEventListener("frame", ({ detail: frame }) => {
    if (frame.type === "queue") {
      conversations = new Map(frame.conversations.map((entry) => [entry.room, entry]));
      renderQueue();
      renderHead();
    } else if (frame.type === "conversation") {
      conversations.set(frame.room, frame);
      renderQueue();
      if (frame.room === current) renderHead();
    }
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
  connection.addEventListener("problem", ({ detail }) => {
    if (detail.ref === "queue") notice.show(`This page is for support agents. The server said: ${detail.message}`, { sticky: true });
    else notice.show(detail.message);
  });
  connection.start();
  return connection;
}

// Most urgent first: waiting (longest wait first), then new, then answered (latest first).
function urgency(a, b) {
  const order = STATUS_ORDER[a.status] - STATUS_ORDER[b.status];
  if (order) return order;
  if (a.status === "waiting") return (a.waiting_since || "").localeCompare(b.waiting_since || "");
  return (b.last?.ts || "").localeCompare(a.last?.ts || "");
}

function statusText(entry) {
  if (entry.status === "waiting") return `Waiting ${formatWait(entry.waiting_since)}`;
  return entry.status === "new" ? "New" : "Answered";
}

function renderQueue() {
  const entries = [...conversations.values()].sort(urgency);
  const waiting = entries.filter((entry) => entry.status === "waiting").length;
  view.queueCount.textContent = entries.length ? `(${waiting} waiting)` : "";
  view.queueEmpty.hidden = entries.length > 0;
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
          el("span", { class: "customer" }, entry.customer),
          el("span", { class: `pill ${entry.status}` }, statusText(entry)),
          el("span", { class: "last" }, entry.last ? `${entry.last.from}: ${entry.last.text}` : "No message yet"),
          entry.agents?.length ? el("span", { class: "agents" }, `With ${entry.agents.join(", ")}`) : null,
        ),
      ),
    ),
  );
  if (focused) view.queue.querySelector(`[data-room="${CSS.escape(focused)}"]`)?.focus();
}

function open(name) {
  if (!opened.has(name)) {
    const list = new MessageList({ me: () => connection.user ?? "you", label: `Messages with ${conversations.get(name)?.customer ?? name}` });
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
  view.title.textContent = current ? (entry?.customer ?? current) : "Support desk";
  view.sub.textContent = entry ? `${statusText(entry)}${entry.agents?.length ? ` · with ${entry.agents.join(", ")}` : ""}` : "";
  view.text.placeholder = current ? `Reply to ${entry?.customer ?? current}` : "Pick a conversation";
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
