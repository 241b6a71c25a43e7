// The chat page (/): rooms, members, messages with history, and a composer.

import { ChatConnection } from "./connection.js";
import { session } from "./login.js";
import { t } from "./texts.js";
import { $, composer, describeRemoval, el, MessageList, nameElement, Notice, Scroller, StatusBar, sayIn } from "./ui.js";

const ROOMS_KEY = "chatd.rooms";
const DEFAULT_ROOM = "lobby";

const view = {
  chat: $("#chat"),
  roomList: $("#room-list"),
  memberList: $("#member-list"),
  memberCount: $("#member-count"),
  title: $("#room-title"),
  older: $("#older"),
  current: $("#current"),
  empty: $("#no-room"),
  leave: $("#leave"),
  text: $("#text"),
  me: $("#me"),
  sidebar: $("#sidebar"),
  toggle: $("#toggle-sidebar"),
};
const notice = new Notice($("#notice"));
const scroller = new Scroller($("#scroller"));
let status = null;
let connection = null;
let current = null; // the room shown
const rooms = new Map(); // name -> {list: MessageList, members: [], names: {}, unread, more}

function savedRooms() {
  try {
    const saved = JSON.parse(localStorage.getItem(ROOMS_KEY));
    if (Array.isArray(saved) && saved.length) return saved.filter((name) => typeof name === "string");
  } catch {
    // a damaged entry: start from the default room
  }
  return [DEFAULT_ROOM];
}

function saveRooms() {
  localStorage.setItem(ROOMS_KEY, JSON.stringify([...rooms.keys()]));
}

function start(credentials) {
  connection?.stop();
  connection = new ChatConnection(credentials);
  status = status || new StatusBar($("#status"), () => connection.retryNow());
  rooms.clear();
  view.roomList.replaceChildren();
  current = null;
  view.chat.hidden = false;
  view.toggle.hidden = false;

  connection.addEventListener("status", (event) => {
    status.show(event.detail);
    renderPending(current);
  });
  connection.addEventListener("welcome", (event) => {
    view.me.textContent = event.detail.name || event.detail.user;
    if (document.activeElement === document.body) view.text.focus();
  });
  connection.addEventListener("fatal", () => {
    view.chat.hidden = true;
    view.toggle.hidden = true;
  });
  connection.addEventListener("reset", ({ detail }) => {
    const room = rooms.get(detail.room);
    room.more = detail.more;
    whenShown(detail.room, () => room.list.reset(detail.events), true);
  });
  connection.addEventListener("events", ({ detail }) => {
    const room = rooms.get(detail.room);
    whenShown(detail.room, () => room.list.append(detail.events));
    if (detail.room !== current) {
      room.unread += detail.events.filter((e) => e.type === "message").length;
      renderRoomList();
    }
  });
  connection.addEventListener("older", ({ detail }) => {
    const room = rooms.get(detail.room);
    room.more = detail.more;
    if (detail.room === current) scroller.keepPosition(() => room.list.prepend(detail.events));
    else room.list.prepend(detail.events);
    renderOlder();
  });
  connection.addEventListener("members", ({ detail }) => {
    Object.assign(rooms.get(detail.room), { members: detail.members, names: detail.names });
    if (detail.room === current) renderMembers();
  });
  connection.addEventListener("pending", ({ detail }) => renderPending(detail.room));
  connection.addEventListener("joinfailed", ({ detail }) => {
    notice.show(t("cannotJoin", { room: detail.room, message: detail.message }));
    drop(detail.room);
  });
  // Closed by the server, kicked or banned: the room goes (and is not joined again on reload).
  connection.addEventListener("removed", ({ detail }) => {
    notice.show(describeRemoval(detail, `#${detail.room}`), { sticky: true });
    drop(detail.room);
  });
  connection.addEventListener("problem", ({ detail }) => notice.show(detail.message));

  // The rooms of the last visit (or the lobby), and the one in the address (/#room).
  const wanted = fromHash();
  for (const name of new Set([...savedRooms(), ...(wanted ? [wanted] : [])])) open(name);
  show(wanted ?? rooms.keys().next().value);
  connection.start();
  return connection;
}

// The room named in the address (/#release), if any.
function fromHash() {
  try {
    return decodeURIComponent(location.hash.slice(1)).toLowerCase() || null;
  } catch {
    return null; // a malformed %-escape
  }
}

// Join a room (if not yet) and keep its list.
function open(name) {
  if (!rooms.has(name)) {
    const list = new MessageList({ me: () => connection.user ?? t("you"), myName: () => connection.name ?? t("you"), label: t("messagesIn", { room: name }) });
    rooms.set(name, { list, members: [], names: {}, unread: 0, more: false });
    connection.join(name);
    saveRooms();
  }
  renderRoomList();
}

function drop(name) {
  rooms.delete(name);
  saveRooms();
  if (current === name) show(rooms.keys().next().value ?? null);
  renderRoomList();
}

function show(name) {
  current = name ?? null;
  const room = rooms.get(current);
  view.empty.hidden = Boolean(room);
  view.leave.hidden = !room;
  view.text.disabled = !room;
  view.title.textContent = room ? `#${current}` : t("noRoom");
  view.text.placeholder = room ? t("messageRoom", { room: current }) : t("joinToChat");
  if (room) {
    room.unread = 0;
    history.replaceState(null, "", `#${current}`);
    scroller.update(() => view.current.replaceChildren(room.list.node), true);
    renderPending(current);
  } else {
    view.current.replaceChildren();
  }
  renderOlder();
  renderMembers();
  renderRoomList();
}

// Change a room's list; if it is the one shown, keep the view scrolled to the newest.
function whenShown(name, change, force = false) {
  if (name === current) scroller.update(change, force);
  else change();
}

function renderRoomList() {
  view.roomList.replaceChildren(
    ...[...rooms].map(([name, room]) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "room",
            "aria-current": name === current ? "true" : false,
            onclick: () => {
              show(name);
              closeSidebar();
              view.text.focus();
            },
          },
          el("span", { class: "room-name" }, `#${name}`),
          room.unread ? el("span", { class: "badge", "aria-label": t("unreadCount", { count: room.unread }) }, String(room.unread)) : null,
        ),
      ),
    ),
  );
}

// One line per user (however many tabs they have open), by display name.
function renderMembers() {
  const room = rooms.get(current);
  const members = room?.members ?? [];
  view.memberCount.textContent = members.length ? `(${members.length})` : "";
  const me = connection?.user;
  const named = members.map((id) => ({ id, name: room.names[id] || id }));
  view.memberList.replaceChildren(
    ...named
      .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id))
      .map(({ id, name }) =>
        el(
          "li",
          { class: "member", dataset: { user: id } },
          el("span", { class: "dot", "aria-hidden": "true" }),
          nameElement("span", {}, name, id),
          id === me ? el("span", { class: "you" }, t("youSuffix")) : null,
        ),
      ),
  );
}

function renderOlder() {
  view.older.hidden = !rooms.get(current)?.more;
}

function renderPending(name) {
  const room = rooms.get(name);
  if (!room || !connection) return;
  whenShown(name, () => room.list.setPending(connection.pendingIn(name), Boolean(connection.welcome)));
}

function closeSidebar() {
  view.sidebar.classList.remove("open");
  view.toggle.setAttribute("aria-expanded", "false");
}

// -- controls -------------------------------------------------------------------------------

$("#join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#room-input");
  // Room names are lower case; the server checks the rest and says what is wrong.
  const name = input.value.trim().replace(/^#/, "").toLowerCase();
  if (!name || !connection) return;
  input.value = "";
  open(name);
  show(name);
  closeSidebar();
  view.text.focus();
});

view.leave.addEventListener("click", () => {
  if (!current) return;
  connection.leave(current);
  drop(current);
});

window.addEventListener("hashchange", () => {
  const name = fromHash();
  if (!name || !connection || name === current) return;
  open(name);
  show(name);
});

view.older.addEventListener("click", () => connection.loadOlder(current));

$(".conversation").addEventListener("click", closeSidebar);

view.toggle.addEventListener("click", () => {
  const open = view.sidebar.classList.toggle("open");
  view.toggle.setAttribute("aria-expanded", String(open));
});

composer($("#composer"), view.text, (text) => sayIn(connection, notice, current, text));

session($("#login"), start);
