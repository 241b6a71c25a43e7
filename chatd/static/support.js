// The customer's page (/support): one private conversation with the support agents.
//
// The server names the conversation room in welcome (`support_room`); every other member of
// that room is a support agent, so a presence join from anyone else is "an agent joined".
// When an agent resolves the conversation a `status` event arrives in the room: the page says
// so, and the customer can simply write again (that opens the conversation again). An
// `assignment` event names the agent handling it. Whether any agent is online comes in welcome
// (`agents_online`) and then in `agents` notices; the customer may write either way.
// Once resolved, the customer may rate the conversation (`rate`, 1 to 5 stars and a comment):
// the form shows until their `rating` event comes back (it comes once stored), or they write.
// The page tells the agents when the customer types (`typing`) and what they have read
// (`read`), and shows "Seen" under the customer's latest message once an agent's read marker
// is past it. Agents' internal notes never reach customers; the list would not show one anyway.

import { ChatConnection } from "./connection.js";
import { session } from "./login.js";
import { t } from "./texts.js";
import { embedded, profileForm, visitorSession } from "./visitor.js";
import { $, composer, describeRemoval, displayName, MessageList, Notice, ReadMarker, Scroller, StatusBar, sayIn, TypingSignal, Typists } from "./ui.js";

const notice = new Notice($("#notice"));
const scroller = new Scroller($("#scroller"));
const banner = $("#banner");
const agentsOnline = $("#agents-online");
const older = $("#older");
const textBox = $("#text");
const typingLine = $("#typing");
const rating = {
  section: $("#rating"),
  form: $("#rating-form"),
  stars: [...document.querySelectorAll("#rating .star")],
  comment: $("#rating-comment"),
  submit: $("#rating-form [type=submit]"),
  thanks: $("#rating-thanks"),
};
let status = null;
let connection = null;
let room = null; // our support room, from welcome
let list = null;
const typists = new Typists(); // the agents typing in our room
const typing = new TypingSignal((name, isTyping) => connection.sendNow({ type: "typing", room: name, typing: isTyping }));
let readMarker = null;
let agentsRead = 0; // the furthest read marker of anyone but us (the agents) in our room
let resolution = null; // while the conversation is resolved: {rated}; null while it is open
let score = 0; // the stars picked in the rating form
let rateRequest = null; // the id of the `rate` on its way
let rates = 0;

function start(credentials) {
  connection?.stop();
  connection = new ChatConnection(credentials);
  status = status || new StatusBar($("#status"), () => connection.retryNow());
  room = null;
  agentsRead = 0;
  resolution = null;
  rateRequest = null;
  typists.clear();
  typing.ended();
  readMarker?.stop();
  readMarker = new ReadMarker(
    (seq) => connection.sendNow({ type: "read", room, seq }),
    () => document.visibilityState === "visible" && connection.isJoined(room),
  );
  const me = () => connection.user ?? t("you");
  list = new MessageList({
    me,
    myName: () => connection.name ?? t("you"),
    label: t("messagesInYourConversation"),
    describePresence: (event) => t(event.event === "join" ? "agentJoined" : "agentLeft", { name: displayName(event) }),
    describeStatus: (event) =>
      t(event.status === "resolved" ? "resolvedForYou" : "markedYourConversation", { name: displayName(event), status: event.status }),
    // Handing the conversation back to the queue is the desk's business: no line for that.
    describeAssignment: (event) => (event.assignee ? t("handlingYourConversation", { name: event.assignee_name || event.assignee }) : null),
    describeRating: (event) => t("youRated", { score: event.score }),
  });
  $("#current").replaceChildren(list.node);
  $("#support").hidden = false;
  renderTyping();
  renderRating();

  // Our own comings and goings (each reconnection is one) are no news to us; an event for a
  // role (an agents' note) is not for us.
  const shown = (events) => events.filter((event) => !event.audience && (event.type !== "presence" || event.user !== connection.user));
  const update = (change, force = false) => scroller.update(change, force);
  // After the list changed: the read marker and "Seen" follow.
  const listChanged = () => {
    const joined = connection.rooms.get(room);
    if (joined) readMarker.shown(joined.epoch, joined.seq);
    renderSeen();
  };

  connection.addEventListener("status", (event) => {
    status.show(event.detail);
    // After a reconnection nobody is typing, until they say so again; a rating sent on the
    // lost connection may be sent again (its event comes with the resumed history if stored).
    if (event.detail.state !== "online") {
      typists.clear();
      typing.ended();
      rateRequest = null;
      renderTyping();
      renderRating();
    }
    renderPending();
  });
  connection.addEventListener("welcome", ({ detail }) => {
    $("#me").textContent = detail.name || detail.user;
    renderAgentsOnline(detail.agents_online);
    if (!detail.support_room) {
      notice.show(t("deskNotOpen"), { sticky: true });
      banner.textContent = t("deskNotOpen");
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
    resolution = null;
    followResolution(detail.events);
    listChanged();
  });
  connection.addEventListener("events", ({ detail }) => {
    update(() => list.append(shown(detail.events)));
    followResolution(detail.events);
    listChanged();
  });
  connection.addEventListener("older", ({ detail }) => {
    older.hidden = !detail.more;
    scroller.keepPosition(() => list.prepend(shown(detail.events)));
    renderSeen();
  });
  connection.addEventListener("members", ({ detail }) => renderBanner(detail.members, detail.names));
  connection.addEventListener("pending", renderPending);
  connection.addEventListener("joinfailed", ({ detail }) => notice.show(t("cannotOpenYourConversation", { message: detail.message }), { sticky: true }));
  // The conversation was closed by the server, or an agent removed us: say so; writing is
  // off until the page is loaded again.
  connection.addEventListener("removed", ({ detail }) => {
    if (detail.room !== room) return;
    room = null;
    notice.show(describeRemoval(detail, t("yourConversation")), { sticky: true });
    renderPending();
  });
  connection.addEventListener("problem", ({ detail }) => {
    if (rateRequest !== null && detail.ref === rateRequest) {
      rateRequest = null;
      renderRating();
    }
    notice.show(detail.message);
  });
  connection.addEventListener("frame", ({ detail: frame }) => {
    if (frame.type === "agents") renderAgentsOnline(frame.online);
    if (frame.room !== room || !room) return;
    if (frame.type === "typing" && frame.user !== connection.user) {
      typists.update(frame);
      renderTyping();
    } else if (frame.type === "read") {
      if (frame.user === connection.user) readMarker.confirmed(frame.seq);
      else agentsRead = Math.max(agentsRead, frame.seq);
      renderSeen();
    } else if (frame.type === "joined") {
      // Everyone's markers as of the join (in the room's epoch now): ours, and the agents'.
      const markers = Object.entries(frame.read ?? {});
      agentsRead = Math.max(0, ...markers.filter(([user]) => user !== connection.user).map(([, seq]) => seq));
      readMarker.confirmed(frame.read?.[connection.user] ?? 0);
      readMarker.flush();
      renderSeen();
    }
  });
  connection.start();
  return connection;
}

function renderBanner(members, names) {
  const agents = members.filter((id) => id !== connection.user).map((id) => names[id] || id);
  banner.classList.toggle("agent-here", agents.length > 0);
  banner.textContent = agents.length ? t("agentsHere", { names: agents }) : t("inQueue");
}

// online: true or false; anything else (a server without the field) hides the line.
function renderAgentsOnline(online) {
  agentsOnline.hidden = typeof online !== "boolean";
  agentsOnline.classList.toggle("online", online === true);
  agentsOnline.textContent = t(online ? "agentOnline" : "noAgentOnline");
}

function renderTyping() {
  typingLine.textContent = typists.describe();
}

function renderSeen() {
  list?.showSeen(agentsRead);
}

// What the conversation's latest events say about its resolution: resolved (by an agent),
// rated (by us), open again (we wrote).
function followResolution(events) {
  for (const event of events) {
    if (event.type === "status" && event.status === "resolved") {
      resolution = { rated: false };
      score = 0;
      rating.comment.value = "";
    } else if (event.type === "rating" && event.from === connection.user && resolution) {
      resolution.rated = true;
      rateRequest = null;
    } else if (event.type === "message" && event.from === connection.user) {
      resolution = null;
    }
  }
  renderRating();
}

function renderRating() {
  rating.section.hidden = !resolution;
  if (!resolution) return;
  rating.form.hidden = resolution.rated;
  rating.thanks.hidden = !resolution.rated;
  for (const star of rating.stars) {
    const value = Number(star.dataset.score);
    star.classList.toggle("lit", value <= score);
    star.setAttribute("aria-pressed", String(value === score));
    star.disabled = rateRequest !== null;
  }
  rating.comment.disabled = rateRequest !== null;
  rating.submit.disabled = !score || rateRequest !== null;
  rating.submit.textContent = t(rateRequest === null ? "sendRating" : "sendingRating");
}

function renderPending() {
  if (!list || !connection) return;
  scroller.update(() => list.setPending(room ? connection.pendingIn(room) : [], Boolean(connection.welcome)));
}

older.addEventListener("click", () => room && connection.loadOlder(room));

for (const star of rating.stars) {
  star.addEventListener("click", () => {
    score = Number(star.dataset.score);
    renderRating();
  });
}

rating.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!score || rateRequest !== null || !connection?.isJoined(room)) return;
  rateRequest = `rate-${++rates}`;
  const frame = { type: "rate", room, score, id: rateRequest };
  const comment = rating.comment.value.trim();
  if (comment) frame.comment = comment;
  connection.send(frame);
  renderRating();
});

document.addEventListener("visibilitychange", () => readMarker?.flush());

textBox.addEventListener("input", () => typing.changed(room, textBox.value));
textBox.addEventListener("focus", () => typing.focused());
textBox.addEventListener("blur", () => typing.blurred());

composer($("#composer"), textBox, (text) => {
  if (!sayIn(connection, notice, room, text)) return false;
  typing.ended(); // the server ends the indicator when the message is accepted
  return true;
});

if (embedded()) {
  profileForm($("#profile"), () => connection);
  visitorSession(start, notice);
} else {
  session($("#login"), start);
}
