// The customer's page (/support): one private conversation with the support agents.
//
// The server names the conversation room in welcome (`support_room`); every other member of
// that room is a support agent, so a presence join from anyone else is "an agent joined".
// When an agent resolves the conversation a `status` event arrives in the room: the page says
// so, and the customer can simply write again (that opens the conversation again). An
// `assignment` event names the agent handling it. Whether any agent is online comes in welcome
// (`agents_online`) and then in `agents` notices; the customer may write either way.

import { ChatConnection } from "./connection.js";
import { session } from "./login.js";
import { embedded, profileForm, visitorSession } from "./visitor.js";
import { $, composer, describeRemoval, displayName, MessageList, Notice, Scroller, StatusBar, sayIn } from "./ui.js";

const notice = new Notice($("#notice"));
const scroller = new Scroller($("#scroller"));
const banner = $("#banner");
const agentsOnline = $("#agents-online");
const older = $("#older");
let status = null;
let connection = null;
let room = null; // our support room, from welcome
let list = null;

function start(credentials) {
  connection?.stop();
  connection = new ChatConnection(credentials);
  status = status || new StatusBar($("#status"), () => connection.retryNow());
  room = null;
  const me = () => connection.user ?? "you";
  list = new MessageList({
    me,
    myName: () => connection.name ?? "you",
    label: "Messages in your conversation",
    describePresence: (event) => `Support agent ${displayName(event)} ${event.event === "join" ? "joined" : "left"} the conversation`,
    describeStatus: (event) =>
      event.status === "resolved"
        ? `${displayName(event)} marked your conversation as resolved. Need more help? Just write here.`
        : `${displayName(event)} marked your conversation as ${event.status}`,
    // Handing the conversation back to the queue is the desk's business: no line for that.
    describeAssignment: (event) => (event.assignee ? `${event.assignee_name || event.assignee} is handling your conversation` : null),
  });
  $("#current").replaceChildren(list.node);
  $("#support").hidden = false;

  // Our own comings and goings (each reconnection is one) are no news to us.
  const shown = (events) => events.filter((event) => event.type !== "presence" || event.user !== connection.user);
  const update = (change, force = false) => scroller.update(change, force);

  connection.addEventListener("status", (event) => {
    status.show(event.detail);
    renderPending();
  });
  connection.addEventListener("welcome", ({ detail }) => {
    $("#me").textContent = detail.name || detail.user;
    renderAgentsOnline(detail.agents_online);
    if (!detail.support_room) {
      notice.show("The support desk is not open on this server.", { sticky: true });
      banner.textContent = "The support desk is not open on this server.";
      return;
    }
    room = detail.support_room;
    connection.join(room);
  });
  connection.addEventListener("fatal", () => {
    $("#support").hidden = true;
  });
  connection.addEventListener("reset", ({ detail }) => {
    older.hidden = !detail.more;
    update(() => list.reset(shown(detail.events)), true);
  });
  connection.addEventListener("events", ({ detail }) => update(() => list.append(shown(detail.events))));
  connection.addEventListener("older", ({ detail }) => {
    older.hidden = !detail.more;
    scroller.keepPosition(() => list.prepend(shown(detail.events)));
  });
  connection.addEventListener("members", ({ detail }) => renderBanner(detail.members, detail.names));
  connection.addEventListener("pending", renderPending);
  connection.addEventListener("joinfailed", ({ detail }) => notice.show(`Cannot open your conversation: ${detail.message}`, { sticky: true }));
  // The conversation was closed by the server, or an agent removed us: say so; writing is
  // off until the page is loaded again.
  connection.addEventListener("removed", ({ detail }) => {
    if (detail.room !== room) return;
    room = null;
    notice.show(describeRemoval(detail, "your conversation"), { sticky: true });
    renderPending();
  });
  connection.addEventListener("problem", ({ detail }) => notice.show(detail.message));
  connection.addEventListener("frame", ({ detail: frame }) => {
    if (frame.type === "agents") renderAgentsOnline(frame.online);
  });
  connection.start();
  return connection;
}

function renderBanner(members, names) {
  const agents = members.filter((id) => id !== connection.user).map((id) => names[id] || id);
  banner.classList.toggle("agent-here", agents.length > 0);
  const who = agents.length > 1 ? `${agents.slice(0, -1).join(", ")} and ${agents.at(-1)}` : agents[0];
  banner.textContent = agents.length
    ? `Support agent${agents.length > 1 ? "s" : ""} ${who} ${agents.length > 1 ? "are" : "is"} here to help.`
    : "You are in the queue: an agent will answer here as soon as possible. You can write your question now.";
}

// online: true or false; anything else (a server without the field) hides the line.
function renderAgentsOnline(online) {
  agentsOnline.hidden = typeof online !== "boolean";
  agentsOnline.classList.toggle("online", online === true);
  agentsOnline.textContent = online
    ? "An agent is online"
    : "No agent is online right now — leave a message and we'll answer as soon as we can";
}

function renderPending() {
  if (!list || !connection) return;
  scroller.update(() => list.setPending(room ? connection.pendingIn(room) : [], Boolean(connection.welcome)));
}

older.addEventListener("click", () => room && connection.loadOlder(room));

composer($("#composer"), $("#text"), (text) => sayIn(connection, notice, room, text));

if (embedded()) {
  profileForm($("#profile"), () => connection);
  visitorSession(start, notice);
} else {
  session($("#login"), start);
}
