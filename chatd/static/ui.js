// Rendering shared by the pages. Whatever users or the server wrote goes into the page as
// text only (text nodes, textContent, plain attributes), never as HTML: a message reading
// <img src=x onerror=alert(1)> is shown as exactly those characters. Texts of our own come
// from the page's language's catalogue (texts.js).

import { t } from "./texts.js";

// el("li", {class: "x", onclick: f}, "text", childNode, ...): an element; strings are text.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

// -- time ---------------------------------------------------------------------------------------

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

export function formatTime(ts, now = new Date()) {
  const date = new Date(ts);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (sameDay(date, now)) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
}

// "just now", "4 min", "1 h 20 min", "2 d"
export function formatWait(since, now = Date.now()) {
  const minutes = Math.floor((now - new Date(since).getTime()) / 60000);
  if (minutes < 1) return t("justNow");
  if (minutes < 60) return t("minutes", { minutes });
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? t("hoursMinutes", { hours, minutes: minutes % 60 }) : t("hours", { hours });
  return t("days", { days: Math.floor(hours / 24) });
}

// -- the message list -----------------------------------------------------------------------

const GROUP_WITHIN_MS = 5 * 60 * 1000;

// Who sent an event, for people: the display name the server put beside the id (events
// written before display names existed have none). Only for showing: a display name is not
// unique and proves nothing, so every decision (mine? grouping?) uses the id.
export function displayName(event) {
  return event.name || (event.type === "presence" ? event.user : event.from);
}

// A name as text, with the user id to hover over when it differs (two people may share a name).
export function nameElement(tag, props, name, id) {
  return el(tag, { ...props, title: name !== id ? id : undefined }, name);
}

// Moderation events as a line of their own; `user` is shown by id (the event's `name` is the
// moderator's).
export function describeModeration(event) {
  const by = displayName(event);
  const user = event.user;
  if (event.type === "kick") return t("kicked", { user, by });
  const ban = event.type === "ban";
  if (!event.until) return t(ban ? "banLifted" : "muteLifted", { user, by });
  return t(ban ? "bannedUntil" : "mutedUntil", { user, by, until: formatTime(event.until) });
}

// An `assignment` event (docs/protocol.md, "Assignment") as a line for the agents: who gave the
// conversation to whom; `auto` ones were the server's round-robin, with no `from`.
function describeAssignmentForAgents(event) {
  const assignee = event.assignee_name || event.assignee;
  if (event.auto) return t("assignedAutomatically", { assignee });
  const by = displayName(event);
  if (!event.assignee) return t("backInQueue", { by });
  return event.assignee === event.from ? t("tookConversation", { by }) : t("assignedConversation", { by, assignee });
}

// Why the server ended our membership of a room (connection.js's "removed"), for people.
export function describeRemoval({ reason, by }, where) {
  if (reason === "kick") return by ? t("removedFromBy", { where, by }) : t("removedFrom", { where });
  if (reason === "ban") return by ? t("bannedFromBy", { where, by }) : t("bannedFrom", { where });
  return t("closedByServer", { where });
}

const MODERATION = new Set(["kick", "ban", "mute"]);

// A "bot" badge for what the website's backend posted as a bot ("bot": true).
function botBadge(event) {
  return event.bot === true ? el("span", { class: "bot-badge", title: t("botTitle") }, t("bot")) : null;
}

// A `rating` event (docs/protocol.md, "Rating"): "alice rated 4/5: quick and kind".
function describeRatingForAgents(event) {
  const [name, score, comment] = [displayName(event), event.score, event.comment];
  return comment ? t("ratedWithComment", { name, score, comment }) : t("rated", { name, score });
}

// One room's events and its messages not yet acknowledged, in a scrolling container.
// Events come already de-duplicated and in order from the connection. Event types this list
// does not know (and `unattended`, which is for the desk's queue) are not shown at all; `edit`
// and `delete` change the message they target instead of adding a line. Agents' internal notes
// are shown only by a list made with showNotes (the desk's): any other list leaves them out,
// should one ever reach it.
export class MessageList {
  constructor({ me, myName, describePresence, describeStatus, describeAssignment, describeRating, label, showNotes = false }) {
    this.me = me; // () => our user id
    this.myName = myName || me; // () => our display name
    this.describePresence = describePresence || ((event) => t(event.event === "join" ? "joined" : "left", { name: displayName(event) }));
    // `status` events: an agent resolved a support conversation.
    this.describeStatus =
      describeStatus ||
      ((event) => t(event.status === "resolved" ? "markedResolved" : "markedConversation", { name: displayName(event), status: event.status }));
    // `assignment` events: who handles a support conversation; null for a line not to show.
    this.describeAssignment = describeAssignment || describeAssignmentForAgents;
    // `rating` events: the customer rated the resolved conversation.
    this.describeRating = describeRating || describeRatingForAgents;
    this.showNotes = showNotes;
    // role=log: screen readers announce what is appended, politely.
    this.events = el("ol", { class: "events", role: "log", "aria-live": "polite", "aria-label": label });
    this.pending = el("ol", { class: "events pending", "aria-label": t("notSentYet") });
    this.node = el("div", { class: "message-list" }, this.events, this.pending);
    this.messages = new Map(); // seq -> the message's <li>, for edits and deletions
    this.seenMark = el("p", { class: "seen" }, t("seen"));
  }

  reset(events) {
    this.events.replaceChildren();
    this.messages.clear();
    this.append(events);
  }

  append(events) {
    const fragment = document.createDocumentFragment();
    let previous = this.events.lastElementChild;
    for (const event of events) {
      const item = this.render(event, previous);
      if (!item) continue;
      fragment.append(item);
      previous = item;
    }
    this.events.append(fragment);
  }

  prepend(events) {
    const fragment = document.createDocumentFragment();
    let previous = null;
    for (const event of events) {
      const item = this.render(event, previous);
      if (!item) continue;
      fragment.append(item);
      previous = item;
    }
    this.events.prepend(fragment);
  }

  // says: [{type, id, text}] (type "say" or "note"), in the order they were said.
  setPending(says, online) {
    this.pending.replaceChildren(
      ...says.map((say) =>
        el(
          "li",
          { class: `event message mine unsent${say.type === "note" ? " note" : ""}`, dataset: { id: say.id } },
          el(
            "div",
            { class: "meta" },
            el("span", { class: "from" }, this.myName()),
            say.type === "note" ? el("span", { class: "note-label" }, t("noteLabel")) : null,
            el("span", { class: "state" }, t(online ? "sending" : "waitingForConnection")),
          ),
          el("div", { class: "text" }, say.text),
        ),
      ),
    );
  }

  // "Seen" under our latest message when `seq` (the furthest read marker of the others) is at
  // or past it; call again whenever either changes.
  showSeen(seq) {
    const latest = [...this.events.querySelectorAll(".message.mine")].at(-1);
    if (latest && Number(latest.dataset.seq) <= seq) latest.append(this.seenMark);
    else this.seenMark.remove();
  }

  // The <li> for an event, or null for one that shows nothing (an edit or a deletion changes
  // its target, if we have it: history served after it holds the target as it is now).
  render(event, previous) {
    if (event.type === "presence" || event.type === "status") {
      const [kind, text] =
        event.type === "presence" ? [`presence ${event.event}`, this.describePresence(event)] : [`status ${event.status}`, this.describeStatus(event)];
      return el(
        "li",
        { class: `event ${kind}`, dataset: { seq: event.seq } },
        event.type === "status" ? botBadge(event) : null,
        el("span", { class: "presence-text" }, text),
        " ",
        timeElement(event.ts),
      );
    }
    if (event.type === "assignment") {
      const text = this.describeAssignment(event);
      if (!text) return null;
      return el(
        "li",
        { class: "event assignment", dataset: { seq: event.seq } },
        botBadge(event),
        el("span", { class: "presence-text" }, text),
        " ",
        timeElement(event.ts),
      );
    }
    if (MODERATION.has(event.type)) {
      return el(
        "li",
        { class: `event moderation ${event.type}`, dataset: { seq: event.seq } },
        el("span", { class: "presence-text" }, describeModeration(event)),
        " ",
        timeElement(event.ts),
      );
    }
    if (event.type === "rating") {
      return el(
        "li",
        { class: "event rating", dataset: { seq: event.seq } },
        el("span", { class: "presence-text" }, this.describeRating(event)),
        " ",
        timeElement(event.ts),
      );
    }
    if (event.type === "edit" || event.type === "delete") {
      this.change(event);
      return null;
    }
    if (event.type === "note") return this.showNotes ? this.renderNote(event) : null;
    if (event.type !== "message") return null; // a kind this page does not know: nothing to show
    const mine = event.from === this.me();
    // Consecutive messages from one sender within a few minutes share one header.
    const continued =
      previous &&
      previous.dataset.from === event.from &&
      new Date(event.ts) - new Date(previous.dataset.ts) < GROUP_WITHIN_MS;
    const item = el(
      "li",
      {
        class: `event message${mine ? " mine" : ""}${continued ? " continued" : ""}`,
        dataset: { seq: event.seq, from: event.from, ts: event.ts },
      },
      el("div", { class: "meta" }, nameElement("span", { class: "from" }, displayName(event), event.from), botBadge(event), timeElement(event.ts)),
      el("div", { class: "text" }, event.text ?? ""),
    );
    if (event.redacted) markDeleted(item);
    else if (event.edited) markEdited(item, event.text, event.edited);
    this.messages.set(event.seq, item);
    return item;
  }

  // A note stands out from the conversation, and starts no group of messages (no data-from).
  renderNote(event) {
    const item = el(
      "li",
      { class: `event message note${event.from === this.me() ? " mine" : ""}`, dataset: { seq: event.seq } },
      el(
        "div",
        { class: "meta" },
        nameElement("span", { class: "from" }, displayName(event), event.from),
        el("span", { class: "note-label" }, t("noteLabel")),
        timeElement(event.ts),
      ),
      el("div", { class: "text" }, event.text ?? ""),
    );
    if (event.redacted) markDeleted(item);
    else if (event.edited) markEdited(item, event.text, event.edited);
    this.messages.set(event.seq, item);
    return item;
  }

  change(event) {
    const item = this.messages.get(event.target);
    if (!item || item.classList.contains("deleted")) return;
    if (event.type === "delete") markDeleted(item);
    else if (typeof event.text === "string") markEdited(item, event.text, event.ts);
  }
}

function markEdited(item, text, when) {
  item.querySelector(".text").textContent = text;
  item.classList.add("edited");
  item.querySelector(".edited-mark")?.remove();
  item.append(el("span", { class: "edited-mark", title: when ? t("editedAt", { when: new Date(when).toLocaleString() }) : undefined }, t("edited")));
}

// The text is dropped from the page, not hidden: a deleted message's text must not linger.
function markDeleted(item) {
  item.querySelector(".text").textContent = t("messageDeleted");
  item.querySelector(".edited-mark")?.remove();
  item.classList.remove("edited");
  item.classList.add("deleted");
}

function timeElement(ts) {
  return el("time", { datetime: ts, title: new Date(ts).toLocaleString() }, formatTime(ts));
}

// Keeps a scroller pinned to the bottom while the reader is there, and leaves it alone when
// they have scrolled up to read.
export class Scroller {
  constructor(node) {
    this.node = node;
  }

  atBottom() {
    const { scrollTop, scrollHeight, clientHeight } = this.node;
    return scrollHeight - scrollTop - clientHeight < 40;
  }

  // Run change(), then follow it down if we were at the bottom (or always, with force).
  update(change, force = false) {
    const follow = force || this.atBottom();
    change();
    if (follow) this.node.scrollTop = this.node.scrollHeight;
  }

  // Run change() that adds content above, keeping what the reader sees in place.
  keepPosition(change) {
    const fromBottom = this.node.scrollHeight - this.node.scrollTop;
    change();
    this.node.scrollTop = this.node.scrollHeight - fromBottom;
  }
}

// -- the composer ---------------------------------------------------------------------------

// Enter sends, Shift+Enter starts a new line; onSend(text) returns true if it took the text.
// A keydown handler added before this one may take a key first (preventDefault).
export function composer(form, textarea, onSend) {
  const grow = () => {
    textarea.style.height = "auto";
    textarea.style.height = `${Math.min(textarea.scrollHeight, 160)}px`;
  };
  const submit = () => {
    // The server refuses control characters other than newline and tab.
    const text = textarea.value.replace(/\r\n?/g, "\n");
    if (!text.trim()) return;
    if (onSend(text)) {
      textarea.value = "";
      grow();
    }
    textarea.focus();
  };
  textarea.addEventListener("keydown", (event) => {
    // isComposing: Enter that confirms an IME composition is not a send.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.defaultPrevented) {
      event.preventDefault();
      submit();
    }
  });
  textarea.addEventListener("input", grow);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
}

// Characters as the server counts them (code points after NFC), for max_text_chars.
export function textLength(text) {
  return [...text.normalize("NFC")].length;
}

// The composer's onSend for a page with one current room: says the text there (or, with
// type "note", posts it as an agent's internal note), unless there is no room or the text is
// over the server's max_text_chars (then explains, in the notice).
export function sayIn(connection, notice, room, text, type = "say") {
  if (!room) return false;
  const limit = connection.welcome?.max_text_chars;
  if (limit && textLength(text) > limit) {
    notice.show(t(type === "note" ? "noteTooLong" : "messageTooLong", { length: textLength(text), limit }));
    return false;
  }
  connection.post(type, room, text);
  return true;
}

// -- typing indicators and read markers (docs/protocol.md, "typing" and "read") -------------

// The server drops an indicator not renewed for [rooms] typing_timeout (5 s by default):
// renew well before.
const TYPING_RENEW_MS = 3000;
// A composer that lost the focus for this long ends the indicator (clicking Send or a canned
// response is no reason to).
const TYPING_BLUR_MS = 2000;

// Tells a room that we are typing: typing true at the first keystroke, again at most every
// TYPING_RENEW_MS while typing goes on, false when the composer is emptied or left.
// send(room, typing) returns whether the frame went out.
export class TypingSignal {
  constructor(send) {
    this.send = send;
    this.room = null; // the room told we are typing, if any
    this.sentAt = 0;
    this.blurTimer = null;
  }

  // The composer for `room` now holds `text` (after a keystroke, a paste...).
  changed(room, text) {
    clearTimeout(this.blurTimer);
    if (room !== this.room) this.stop();
    if (!room || !text.trim()) {
      this.stop();
      return;
    }
    if (this.room === room && Date.now() - this.sentAt < TYPING_RENEW_MS) return;
    if (this.send(room, true)) {
      this.room = room;
      this.sentAt = Date.now();
    }
  }

  blurred() {
    clearTimeout(this.blurTimer);
    if (this.room !== null) this.blurTimer = setTimeout(() => this.stop(), TYPING_BLUR_MS);
  }

  focused() {
    clearTimeout(this.blurTimer);
  }

  stop() {
    clearTimeout(this.blurTimer);
    if (this.room !== null) this.send(this.room, false);
    this.room = null;
  }

  // The server ended the indicator itself (our message was accepted, the connection ended).
  ended() {
    clearTimeout(this.blurTimer);
    this.room = null;
  }
}

// Who is typing in a room, from the `typing` frames of the others: user id -> display name.
export class Typists {
  constructor() {
    this.names = new Map();
  }

  update(frame) {
    if (frame.typing === true) this.names.set(frame.user, frame.name || frame.user);
    else this.names.delete(frame.user);
  }

  clear() {
    this.names.clear();
  }

  // "alice is typing…", "alice and bob are typing…", or "" when nobody is.
  describe() {
    const names = [...this.names.values()];
    if (!names.length) return "";
    return t("typing", { names });
  }
}

const READ_EVERY_MS = 1000;

// Our read marker in one room: send(seq) tells the server (returns whether it went out),
// reading() says whether the person sees the conversation now (the page visible, the room
// shown). At most one `read` a second, and never for a seq below one already sent or stored.
export class ReadMarker {
  constructor(send, reading) {
    this.send = send;
    this.reading = reading;
    this.epoch = null;
    this.latest = 0; // the latest event shown
    this.sent = 0; // the highest seq sent, or confirmed by the server
    this.sentAt = 0;
    this.timer = null;
  }

  // The room shows events up to `seq` of `epoch` (a new epoch starts the markers afresh).
  shown(epoch, seq) {
    if (epoch !== this.epoch) {
      this.epoch = epoch;
      this.latest = this.sent = 0;
    }
    this.latest = Math.max(this.latest, seq);
    this.flush();
  }

  // The server says our user's marker (from any of its sessions) is at `seq`.
  confirmed(seq) {
    this.sent = Math.max(this.sent, seq);
  }

  // Whether the server has a marker at the latest event shown, or gets one within a second.
  upToDate() {
    return this.latest > 0 && (this.sent >= this.latest || this.timer !== null);
  }

  // Send the marker if the person sees the latest events and the server does not have it yet.
  flush() {
    if (this.timer !== null || !this.reading() || this.latest <= this.sent) return;
    const wait = this.sentAt + READ_EVERY_MS - Date.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, wait);
    } else if (this.send(this.latest)) {
      this.sent = this.latest;
      this.sentAt = Date.now();
    }
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }
}

// -- connection status and notices ----------------------------------------------------------

// Shows the connection's state: online, connecting, or offline with a countdown to the next
// attempt and a button to try now.
export class StatusBar {
  constructor(node, onRetry) {
    this.node = node;
    this.onRetry = onRetry;
    this.timer = null;
    this.status = { state: "connecting" };
  }

  show(status) {
    this.status = status;
    clearInterval(this.timer);
    this.timer = null;
    if (status.state === "offline") this.timer = setInterval(() => this.paint(), 1000);
    this.paint();
  }

  paint() {
    const { state, reason, retryAt } = this.status;
    this.node.dataset.state = state;
    if (state === "online") {
      this.node.replaceChildren(el("span", { class: "dot" }), t("connected"));
    } else if (state === "connecting") {
      this.node.replaceChildren(el("span", { class: "dot" }), t("connecting"));
    } else if (state === "offline") {
      const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      this.node.replaceChildren(
        el("span", { class: "dot" }),
        t("offline", { reason, seconds }),
        el("button", { type: "button", class: "link", onclick: () => this.onRetry() }, t("retryNow")),
      );
    } else {
      const { restartable } = this.status;
      this.node.replaceChildren(
        el("span", { class: "dot" }),
        reason ? t("signedOutBecause", { reason }) : t("signedOut"),
        restartable ? el("button", { type: "button", class: "link", onclick: () => this.onRetry() }, t("connectAgain")) : null,
      );
    }
  }
}

// One line for problems the server reported (error frames, in its words) and the like.
export class Notice {
  constructor(node) {
    this.node = node;
    this.timer = null;
  }

  show(message, { sticky = false } = {}) {
    clearTimeout(this.timer);
    this.node.replaceChildren(
      el("span", { class: "notice-text" }, message),
      el("button", { type: "button", class: "link", "aria-label": t("dismiss"), onclick: () => this.hide() }, t("dismiss")),
    );
    this.node.hidden = false;
    if (!sticky) this.timer = setTimeout(() => this.hide(), 10000);
  }

  hide() {
    clearTimeout(this.timer);
    this.node.hidden = true;
    this.node.replaceChildren();
  }
}
