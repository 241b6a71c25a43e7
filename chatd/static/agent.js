// The agents' page (/agent): the live queue of support conversations, and the conversations
// this agent has opened (joined), with replies.
//
// After every welcome (so after each reconnection too), and when a filter changes (status:
// all/open/resolved; assignment, the queue's `view`: all/mine/unassigned), it sends
// {"type":"queue"}: the reply is the first page of the queue (more pages on "Load more", with
// `before` = the previous reply's `next`), and from then on each change comes as a
// "conversation" frame (for every conversation: the page applies the filters itself). A resolved
// conversation stays in the list (greyed, at the end) until the queue is next loaded after the
// server's [support] resolved_ttl: then the server leaves it out.
// Customers' and agents' display names are shown, but rooms and people are told apart by id.
//
// Assignment: "Claim" sends `assign` (the server answers `conflict` when another agent got there
// first), the conversation's head transfers it with `transfer`. The agents and their
// availability come with each queue reply and then as "agent" frames; this agent's own is in
// welcome and in the answer to the `availability` it sends from the header.
//
// In the conversation shown: who is typing (`typing` frames; ours go out as we type replies,
// never notes), our read marker (`read`, while the page is visible; each queue entry's
// `unread` badge, zeroed here when we send it), internal notes (the "Note" toggle posts a
// `note`, which only agents see), canned responses ("/key", canned.js) and the customer's
// `rating` once the conversation is resolved.

import { CannedPicker } from "./canned.js";
import { ChatConnection } from "./connection.js";
import { session } from "./login.js";
import { t } from "./texts.js";
import {
  $,
  composer,
  describeRemoval,
  el,
  formatWait,
  MessageList,
  nameElement,
  Notice,
  ReadMarker,
  Scroller,
  StatusBar,
  sayIn,
  TypingSignal,
  Typists,
} from "./ui.js";

// How urgent each phase is: waiting for an answer, answered (still open), resolved.
const PHASE_ORDER = { waiting: 0, answered: 1, resolved: 2 };
const QUEUE_PAGE = 50;
const AVAILABILITY_WORDS = { online: t("online"), away: t("away"), offline: t("offlineStatus") };
const view = {
  desk: $("#desk"),
  queue: $("#queue"),
  queueCount: $("#queue-count"),
  queueEmpty: $("#queue-empty"),
  queueMore: $("#queue-more"),
  statusFilter: $("#queue-filter"),
  assignmentFilter: $("#queue-view"),
  agentList: $("#agent-list"),
  availabilityBox: $(".availability"),
  availability: $("#availability"),
  transfer: $("#transfer"),
  transferTo: $("#transfer-to"),
  resolve: $("#resolve"),
  title: $("#room-title"),
  sub: $("#room-sub"),
  current: $("#current"),
  empty: $("#no-room"),
  older: $("#older"),
  leave: $("#leave"),
  text: $("#text"),
  composerForm: $("#composer"),
  send: $("#composer [type=submit]"),
  noteMode: $("#note-mode"),
  typing: $("#typing"),
  sidebar: $("#sidebar"),
  toggle: $("#toggle-sidebar"),
};
const notice = new Notice($("#notice"));
const scroller = new Scroller($("#scroller"));
let status = null;
let connection = null;
let conversations = new Map(); // room -> the queue's entry for it, for those the filters let through
let latestEntries = new Map(); // room -> the latest entry seen for it, filtered out or not (the head)
let statusFilter = "all"; // all | open | resolved
let assignmentFilter = "all"; // the queue's `view`: all | mine | unassigned
let next = null; // the cursor for the queue's next page, when there is one
const names = new Map(); // user id -> display name, as last seen in a room's frames
let agents = new Map(); // user id -> {user, name, status}: every agent the server has seen
let availability = null; // this agent's own, as the server last said: online | away
const claims = new Map(); // the id of an `assign` we sent -> its room
const lostClaims = new Set(); // rooms claimed first by someone our queue entry does not show yet
let transferChoice = null; // the agent picked in the transfer select; null: the assignee
let resolves = 0;
let requests = 0; // for the ids of assign, transfer and availability requests
const opened = new Map(); // room -> {list: MessageList, more, typists: Typists, marker: ReadMarker}
let current = null;
let writingNote = false; // the composer posts an internal note instead of a reply
const typing = new TypingSignal((room, isTyping) => connection.sendNow({ type: "typing", room, typing: isTyping }));
const canned = new CannedPicker(view.text, $("#canned"));

function start(credentials) {
  connection?.stop();
  connection = new ChatConnection(credentials);
  status = status || new StatusBar($("#status"), () => connection.retryNow());
  conversations = new Map();
  latestEntries = new Map();
  agents = new Map();
  claims.clear();
  lostClaims.clear();
  for (const room of opened.values()) room.marker.stop();
  opened.clear();
  typing.ended();
  show(null);
  renderAgents();
  view.desk.hidden = false;
  view.toggle.hidden = false;

  connection.addEventListener("status", (event) => {
    status.show(event.detail);
    view.availability.disabled = !connection.welcome;
    // After a reconnection nobody is typing, until they say so again.
    if (event.detail.state !== "online") {
      for (const room of opened.values()) room.typists.clear();
      typing.ended();
      renderTyping();
    }
    renderPending(current);
  });
  connection.addEventListener("welcome", ({ detail }) => {
    $("#me").textContent = detail.name || detail.user;
    view.availabilityBox.hidden = typeof detail.availability !== "string";
    renderAvailability(detail.availability);
    canned.setResponses(detail.canned);
    loadQueue();
  });
  connection.addEventListener("fatal", () => {
    view.desk.hidden = true;
    view.toggle.hidden = true;
    view.availabilityBox.hidden = true;
  });
  connection.addEventListener("frame", ({ detail: frame }) => {
    if (frame.type === "queue") {
      // An answer to a request made before the filters last changed: not what is asked for now.
      if (frame.status !== statusFilter || frame.view !== assignmentFilter) return;
      // The first page replaces the list; a next page adds to it.
      if (frame.ref !== "queue-more") conversations = new Map();
      for (const entry of frame.conversations) {
        conversations.set(entry.room, entry);
        latestEntries.set(entry.room, entry);
      }
      next = frame.more ? frame.next : null;
      if (Array.isArray(frame.availability)) {
        agents = new Map();
        for (const agent of frame.availability) updateAgent(agent);
      }
      renderQueue();
      renderHead();
      renderAgents();
    } else if (frame.type === "conversation") {
      // A live change; one that no longer matches the filters leaves the list. Our read
      // marker may be on its way: what we have read already is not unread.
      if (opened.get(frame.room)?.marker.upToDate()) frame.unread = 0;
      const before = latestEntries.get(frame.room);
      latestEntries.set(frame.room, frame);
      if (matches(frame)) conversations.set(frame.room, frame);
      else conversations.delete(frame.room);
      if (lostClaims.has(frame.room) && frame.assignee && frame.assignee !== connection.user) {
        lostClaims.delete(frame.room);
        notice.show(claimedFirst(frame));
      }
      renderQueue();
      if (frame.room === current) {
        if (frame.assignee !== before?.assignee) transferChoice = null;
        renderHead();
      }
    } else if (frame.type === "agent") {
      updateAgent(frame);
      if (frame.user === connection.user) renderAvailability(frame.status);
      renderAgents();
      renderHead();
    } else if (frame.type === "availability" && frame.user === connection.user) {
      renderAvailability(frame.status);
    } else if (frame.type === "ack") {
      claims.delete(frame.id);
    } else if (frame.type === "canned") {
      canned.setResponses(frame.responses);
    } else if (frame.type === "typing" && opened.has(frame.room) && frame.user !== connection.user) {
      opened.get(frame.room).typists.update(frame);
      if (frame.room === current) renderTyping();
    } else if (frame.type === "read" && opened.has(frame.room) && frame.user === connection.user) {
      opened.get(frame.room).marker.confirmed(frame.seq);
    } else if (frame.type === "joined" && opened.has(frame.room)) {
      const { marker } = opened.get(frame.room);
      marker.confirmed(frame.read?.[connection.user] ?? 0);
      marker.flush();
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
    markShown(detail.room);
  });
  connection.addEventListener("events", ({ detail }) => {
    whenShown(detail.room, () => opened.get(detail.room).list.append(detail.events));
    markShown(detail.room);
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
    notice.show(t("cannotOpenConversation", { room: detail.room, message: detail.message }));
    closeConversation(detail.room);
  });
  connection.addEventListener("removed", ({ detail }) => {
    notice.show(describeRemoval(detail, t("theConversation", { room: detail.room })), { sticky: true });
    closeConversation(detail.room);
  });
  connection.addEventListener("problem", ({ detail }) => {
    const claimed = claims.get(detail.ref);
    claims.delete(detail.ref);
    if (claimed !== undefined && detail.code === "conflict") {
      claimLost(claimed);
      return;
    }
    if (detail.ref?.startsWith("availability-")) renderAvailability(availability); // unchanged
    if (detail.ref === "queue" && detail.code === "forbidden") notice.show(t("agentsOnly", { message: detail.message }), { sticky: true });
    else notice.show(detail.message);
  });
  connection.start();
  return connection;
}

function loadQueue(more = false) {
  const frame = { type: "queue", status: statusFilter, view: assignmentFilter, limit: QUEUE_PAGE, id: more ? "queue-more" : "queue" };
  if (more) frame.before = next;
  connection.send(frame);
}

function matches(entry) {
  if (statusFilter !== "all" && entry.status !== statusFilter) return false;
  if (assignmentFilter === "mine") return entry.assignee === connection.user;
  if (assignmentFilter === "unassigned") return !entry.assignee;
  return true;
}

function emptyQueueText() {
  const status = { all: "", open: "Open", resolved: "Resolved" }[statusFilter];
  if (assignmentFilter === "mine") return t(`noneMine${status}`);
  if (assignmentFilter === "unassigned") return t(`noneUnassigned${status}`);
  return status ? t(`none${status}`) : t("noConversationsYet");
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
  if (now === "waiting") return t("waitingFor", { wait: formatWait(entry.waiting_since) });
  return t(now === "resolved" ? "resolved" : "answered");
}

function customerName(entry, room) {
  return entry ? entry.customer_name || entry.customer : room;
}

function agentNames(entry) {
  return (entry.agents || []).map((id) => names.get(id) || id).join(", ");
}

// "You", or the assignee's display name; null when the conversation is unassigned.
function assigneeName(entry) {
  if (!entry.assignee) return null;
  if (entry.assignee === connection.user) return t("youAssignee");
  return entry.assignee_name || names.get(entry.assignee) || entry.assignee;
}

function claim(room) {
  if (!connection?.welcome) return;
  const id = `assign-${++requests}`;
  claims.set(id, room);
  connection.send({ type: "assign", room, id });
}

// Our `assign` got `conflict`: say who was first, once our entry for the room knows.
function claimLost(room) {
  const entry = latestEntries.get(room);
  if (entry?.assignee && entry.assignee !== connection.user) {
    notice.show(claimedFirst(entry));
  } else {
    lostClaims.add(room);
    notice.show(t("claimedFirstByOther", { customer: customerName(entry, room) }));
  }
}

function claimedFirst(entry) {
  return t("claimedFirst", { customer: customerName(entry), assignee: assigneeName(entry) });
}

function updateAgent({ user, name, status: agentStatus }) {
  agents.set(user, { user, name: name || user, status: agentStatus });
  if (name) names.set(user, name);
}

function agentsByName() {
  return [...agents.values()].sort((a, b) => a.name.localeCompare(b.name) || a.user.localeCompare(b.user));
}

function renderAgents() {
  view.agentList.replaceChildren(
    ...agentsByName().map((agent) =>
      el(
        "li",
        { class: "agent", dataset: { status: agent.status } },
        el("span", { class: "dot", "aria-hidden": "true" }),
        nameElement("span", { class: "agent-name" }, agent.user === connection?.user ? t("agentYou", { name: agent.name }) : agent.name, agent.user),
        el("span", { class: "agent-status" }, AVAILABILITY_WORDS[agent.status] ?? agent.status),
      ),
    ),
  );
}

function renderAvailability(chosen) {
  availability = chosen;
  if (chosen in AVAILABILITY_WORDS) view.availability.value = chosen;
}

// Who the conversation shown may go to: nobody (""), this agent, the other agents not offline.
function renderTransfer() {
  const entry = latestEntries.get(current);
  view.transfer.hidden = !opened.has(current) || !entry;
  if (view.transfer.hidden) return;
  const me = connection.user;
  const candidates = agentsByName()
    .filter((agent) => agent.status !== "offline")
    .sort((a, b) => (b.user === me) - (a.user === me));
  view.transferTo.replaceChildren(
    el("option", { value: "" }, t("nobody")),
    ...candidates.map((agent) => {
      const name = agent.user === me ? t("youAssignee") : agent.name;
      return el("option", { value: agent.user }, agent.status === "away" ? t("agentAway", { name }) : name);
    }),
  );
  const wanted = transferChoice ?? entry.assignee ?? "";
  view.transferTo.value = candidates.some((agent) => agent.user === wanted) ? wanted : "";
  view.transfer.querySelector("button").disabled = view.transferTo.value === (entry.assignee ?? "");
}

function renderQueue() {
  const entries = [...conversations.values()].sort(urgency);
  const waiting = entries.filter((entry) => phase(entry) === "waiting").length;
  view.queueCount.textContent = entries.length ? t("waitingCount", { waiting }) : "";
  view.queueEmpty.hidden = entries.length > 0;
  view.queueEmpty.textContent = emptyQueueText();
  view.queueMore.hidden = next === null;
  // The list is rebuilt on every change: keep the keyboard focus on the same conversation (on
  // its Claim button if it was there and still is).
  const active = view.queue.contains(document.activeElement) ? document.activeElement : null;
  view.queue.replaceChildren(
    ...entries.map((entry) =>
      el(
        "li",
        { class: "queue-entry" },
        el(
          "button",
          {
            type: "button",
            class: "queue-item",
            dataset: { room: entry.room, status: entry.status },
            "aria-current": entry.room === current ? "true" : false,
            onclick: () => open(entry.room),
          },
          el(
            "span",
            { class: "customer-line" },
            nameElement("span", { class: "customer" }, customerName(entry), entry.customer),
            entry.unread ? el("span", { class: "badge unread", "aria-label": t("unreadCount", { count: entry.unread }) }, String(entry.unread)) : null,
          ),
          el("span", { class: `pill ${phase(entry)}` }, statusText(entry)),
          el("span", { class: "last" }, entry.last ? `${entry.last.name || entry.last.from}: ${entry.last.text}` : t("noMessageYet")),
          entry.rating ? el("span", { class: "entry-rating" }, t("ratedScore", { score: entry.rating })) : null,
          entry.agents?.length ? el("span", { class: "agents" }, t("withAgents", { names: agentNames(entry) })) : null,
          el(
            "span",
            { class: "assignment" },
            entry.assignee ? el("span", { class: "assignee-label" }, t("assignedTo")) : null,
            el("span", { class: "assignee" }, assigneeName(entry) ?? t("unassigned")),
          ),
        ),
        // Only open conversations need someone to take them.
        !entry.assignee && entry.status === "open"
          ? el(
              "button",
              {
                type: "button",
                class: "claim",
                dataset: { room: entry.room },
                "aria-label": t("claimConversation", { customer: customerName(entry) }),
                onclick: () => claim(entry.room),
              },
              t("claim"),
            )
          : null,
      ),
    ),
  );
  if (active) {
    const room = `[data-room="${CSS.escape(active.dataset.room)}"]`;
    const claimButton = active.classList.contains("claim") ? view.queue.querySelector(`.claim${room}`) : null;
    (claimButton ?? view.queue.querySelector(`.queue-item${room}`))?.focus();
  }
}

function open(name) {
  if (!opened.has(name)) {
    const list = new MessageList({
      me: () => connection.user ?? t("you"),
      myName: () => connection.name ?? t("you"),
      label: t("messagesWith", { customer: customerName(latestEntries.get(name), name) }),
      showNotes: true,
    });
    const marker = new ReadMarker(
      (seq) => markRead(name, seq),
      () => document.visibilityState === "visible" && current === name && connection.isJoined(name),
    );
    opened.set(name, { list, more: false, typists: new Typists(), marker });
    connection.join(name);
  }
  show(name);
  view.sidebar.classList.remove("open");
  view.toggle.setAttribute("aria-expanded", "false");
  view.text.focus();
}

// The conversation is gone (left, refused, closed by the server).
function closeConversation(name) {
  opened.get(name)?.marker.stop();
  opened.delete(name);
  if (current === name) show(null);
}

// We told the server what we have read: the entry's badge goes, without waiting for the queue.
function markRead(name, seq) {
  if (!connection.sendNow({ type: "read", room: name, seq })) return false;
  const entry = latestEntries.get(name);
  if (entry?.unread) {
    entry.unread = 0;
    renderQueue();
  }
  return true;
}

function markShown(name) {
  const joined = connection.rooms.get(name);
  if (joined) opened.get(name)?.marker.shown(joined.epoch, joined.seq);
}

function show(name) {
  if (name !== current) {
    typing.stop();
    setWritingNote(false);
  }
  current = name;
  transferChoice = null;
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
  renderTyping();
  room?.marker.flush();
}

function renderTyping() {
  view.typing.textContent = opened.get(current)?.typists.describe() ?? "";
}

// The composer writes an internal note (only agents see it) or a reply to the customer.
function setWritingNote(note) {
  writingNote = note;
  view.noteMode.setAttribute("aria-pressed", String(note));
  view.composerForm.classList.toggle("writing-note", note);
  view.send.textContent = t(note ? "addNote" : "send");
  if (note) typing.stop(); // a note is nothing the customer should see coming
  renderHead();
}

function renderHead() {
  const entry = latestEntries.get(current);
  const customer = customerName(entry, current);
  view.title.textContent = current ? customer : t("supportDesk");
  view.title.title = entry && customer !== entry.customer ? entry.customer : "";
  let assigned = t("headUnassigned");
  if (entry?.assignee) assigned = entry.assignee === connection.user ? t("headAssignedToYou") : t("headAssignedTo", { name: assigneeName(entry) });
  view.sub.textContent = entry ? `${statusText(entry)}${entry.agents?.length ? t("headWith", { names: agentNames(entry) }) : ""} · ${assigned}` : "";
  if (!current) view.text.placeholder = t("pickConversation");
  else view.text.placeholder = writingNote ? t("noteLabel") : t("replyTo", { customer });
  // Resolving is for an open conversation; the button comes back when the customer writes.
  view.resolve.hidden = !opened.has(current) || entry?.status !== "open";
  view.resolve.disabled = false;
  renderTransfer();
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
  closeConversation(current);
});

view.older.addEventListener("click", () => connection.loadOlder(current));

// The server writes a `status` event to the room and sends the new queue entry; until then
// the button stays disabled.
view.resolve.addEventListener("click", () => {
  if (!current || !connection?.welcome) return;
  view.resolve.disabled = true;
  connection.send({ type: "resolve", room: current, id: `resolve-${++resolves}` });
});

function filtersChanged() {
  statusFilter = view.statusFilter.value;
  assignmentFilter = view.assignmentFilter.value;
  conversations = new Map();
  next = null;
  renderQueue();
  if (connection?.welcome) loadQueue();
}

view.statusFilter.addEventListener("change", filtersChanged);
view.assignmentFilter.addEventListener("change", filtersChanged);

view.transferTo.addEventListener("change", () => {
  transferChoice = view.transferTo.value;
  renderTransfer();
});

// The head shows the new assignee once the server's `conversation` update arrives.
view.transfer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!current || !connection?.welcome) return;
  connection.send({ type: "transfer", room: current, agent: view.transferTo.value || null, id: `transfer-${++requests}` });
});

// The select shows the choice at once; an error from the server puts it back.
view.availability.addEventListener("change", () => {
  if (!connection?.welcome) return;
  connection.send({ type: "availability", status: view.availability.value, id: `availability-${++requests}` });
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

view.noteMode.addEventListener("click", () => {
  setWritingNote(!writingNote);
  view.text.focus();
});

document.addEventListener("visibilitychange", () => opened.get(current)?.marker.flush());

view.text.addEventListener("input", () => typing.changed(writingNote ? null : current, view.text.value));
view.text.addEventListener("focus", () => typing.focused());
view.text.addEventListener("blur", () => typing.blurred());

// After the canned responses' picker, which takes Enter while its list is open.
composer(view.composerForm, view.text, (text) => {
  if (!sayIn(connection, notice, current, text, writingNote ? "note" : "say")) return false;
  if (!writingNote) typing.ended(); // the server ends the indicator when the message is accepted
  return true;
});

// "Waiting 4 min" ages while nothing happens: repaint the queue now and then.
setInterval(() => conversations.size && renderQueue(), 30000);

session($("#login"), start);
