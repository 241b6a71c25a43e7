// The reconnecting chatd connection and its resume state (docs/protocol.md).
//
// It owns what must survive a dropped socket: the rooms this client wants to be in, with the
// epoch and the last seq of every event it has handed to the page, and the messages said but
// not yet acknowledged. On every (re)connection it says hello again, re-joins each room with
// `since: {epoch, seq}` and resends the pending messages with their original ids, so a network
// blip or a daemon restart shows the page no gap and no duplicate:
//   - events are handed on only if their seq is above the room's last one (dedupe by seq);
//   - a `joined` with `recovered: false` (new epoch, or history no longer in memory) replaces
//     the room's events with the history it carries ("reset");
//   - the server answers a resent `say` whose id it already has with the original ack.
//
// Sessions (docs/protocol.md, "One user, several connections"): a user may be connected from
// several tabs at once. Two secrets from welcome make that work:
//   - open mode's user secret (`secret`) is kept in localStorage under the name, so that every
//     tab of this browser presents it in hello and becomes another session of the same user,
//     instead of getting `name_taken`;
//   - the session's resume secret (`resume`) is kept in sessionStorage, for this tab only, and
//     sent in every hello: after a network switch the server hands this tab its old session at
//     once (closing the half-open connection with 4000) instead of keeping a ghost.
// A secret that no longer matches (the user's sessions all ended) is ignored by the server.
//
// The page listens with addEventListener(type, handler); `event.detail` holds the data:
//   status   {state: "connecting" | "online" | "offline" | "stopped", reason, retryAt,
//            restartable}: "stopped" with a reason when the server ended this session for good
//            (taken over elsewhere, revoked); restartable: retryNow() may open a new one
//   welcome  the welcome frame (once per connection)
//   fatal    {code, message}: the server refused us (bad token, name taken, token expired...);
//            stopped: the page should ask the person to sign in again
//   reset    {room, events, more}: replace the room's events with these
//   events   {room, events}: new events, in seq order, never seen before
//   older    {room, events, more}: earlier events, from "load earlier"
//   members  {room, members, names}: the room's members now (user ids), and names: {id: display
//            name} (display names are for showing only: identity is always the id)
//   pending  {room}: the room's unacknowledged messages (and agents' notes) changed (see
//            pendingIn)
//   joinfailed {room, code, message}: a join was refused; the room is dropped
//   removed  {room, reason, by}: the server ended our membership itself (an unsolicited
//            `left`: the room was closed, or a moderator kicked or banned us: reason "kick" |
//            "ban", by the moderator's id); the room is dropped, and not joined again
//   problem  {code, message, ref}: an error frame about something else, in words
//   frame    every frame received, after the above (for the support desk's own frames)

import { t } from "./texts.js";

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
// A connection that lived this long starts the next backoff from the beginning again; one
// that the server keeps closing soon after hello (say a flood or slow-consumer close) backs
// off further each time.
const STABLE_AFTER_MS = 10000;
const RESEND_AFTER_MS = 1500;
// Close codes chatd chooses (docs/protocol.md, "Close codes").
const CLOSE_REPLACED = 4000; // another connection resumed this session
const CLOSE_TOKEN_EXPIRED = 4001; // the token ran out and no refresh came in time
const CLOSE_REVOKED = 4003; // the operator revoked the token or the user
const RESUME_KEY = "chatd.resume"; // sessionStorage: this tab's session
const SECRET_KEY = "chatd.secret."; // localStorage, + the name in lower case: the user's secret
// The method that handles each type of server frame.
const FRAME_HANDLERS = {
  welcome: "onWelcome",
  joined: "onJoined",
  message: "onEvent",
  presence: "onEvent",
  status: "onEvent",
  left: "onLeft",
  ack: "onAck",
  history: "onHistory",
  members: "onMembers",
  error: "onError",
};
// Errors in answer to hello that another attempt cannot fix.
const HELLO_REFUSALS = new Set(["auth_failed", "token_expired", "bad_name", "name_taken", "too_many_sessions", "bad_frame"]);
// Errors that settle a `say` for good: the message is dropped (and the page says why).
const SAY_REFUSALS = new Set(["bad_text", "text_too_long", "bad_id", "forbidden", "not_joined", "bad_room"]);

// Any frame shaped like a room event (room, epoch, seq) that no handler above claims: an event
// type newer than this client. It still advances the room's seq.
function isRoomEvent(frame) {
  return typeof frame.room === "string" && typeof frame.epoch === "string" && Number.isInteger(frame.seq);
}

export function socketUrl(loc = window.location) {
  return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/ws";
}

// Web storage can be unavailable (disabled, a sandboxed frame, a frame in another site when
// the browser blocks third-party storage: then even naming it throws): then we do without.
// `storage` is "localStorage" or "sessionStorage".
function stored(storage, key) {
  try {
    return window[storage].getItem(key);
  } catch {
    return null;
  }
}

function store(storage, key, value) {
  try {
    if (value) window[storage].setItem(key, value);
    else window[storage].removeItem(key);
  } catch {
    // nothing to keep it in: this tab works, it just cannot be resumed after a reload
  }
}

function randomTag() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class ChatConnection extends EventTarget {
  // credentials: {name} in open mode, or {token} with token auth: sent in hello only, never
  // in the URL (URLs end up in proxy and access logs).
  constructor(credentials, url = socketUrl()) {
    super();
    this.credentials = credentials;
    this.url = url;
    this.ws = null;
    this.welcome = null; // the current connection's welcome frame, null until welcomed
    this.user = null; // our user id, from the last welcome
    this.name = null; // our display name, from the last welcome
    this.rooms = new Map(); // name -> {epoch, seq, oldest, more, members: Set, joined}
    this.pending = new Map(); // say id -> the say (or note) frame, in the order they were said
    this.stopped = false;
    this.attempt = 0;
    this.everWelcomed = false;
    this.welcomedAt = 0;
    this.retryTimer = null;
    this.resendTimer = null;
    this.offlineReason = null; // why the last welcomed connection ended, until the next welcome
    // Message ids must be unique per sender for [limits] retry_window, across page loads
    // too: a random tag per page, then a counter.
    this.idTag = randomTag();
    this.counter = 0;
    this.joinRefs = new Map(); // join id -> room, to tell which join an error is about
    this.onOnline = () => this.retryNow();
  }

  // -- lifecycle ------------------------------------------------------------------------------

  start() {
    window.addEventListener("online", this.onOnline);
    this.open();
  }

  // Stop for good; with a reason, the page says why (and whether retryNow() may start again).
  stop(reason = null, restartable = false) {
    this.stopped = true;
    this.restartable = restartable;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    clearTimeout(this.resendTimer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.welcome = null;
    this.emit("status", { state: "stopped", reason, restartable });
  }

  // Reconnect at once (the "Retry now" button; the browser saying it is back online). An
  // attempt still connecting is dropped: it began offline and may take long to fail.
  retryNow() {
    if (this.stopped && this.restartable) {
      this.stopped = this.restartable = false;
      window.addEventListener("online", this.onOnline);
    }
    if (this.stopped || this.ws?.readyState === WebSocket.OPEN) return;
    const stale = this.ws;
    this.ws = null;
    stale?.close();
    this.attempt = 0;
    this.open();
  }

  open() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.emit("status", { state: "connecting" });
    const ws = new WebSocket(this.url);
    this.ws = ws;
    // Handlers check `ws === this.ws`: a socket we gave up on must not touch the state.
    ws.onopen = () => {
      if (ws === this.ws) this.send(this.hello());
    };
    ws.onmessage = (message) => {
      if (ws === this.ws) this.receive(message.data);
    };
    ws.onclose = (close) => {
      if (ws === this.ws) this.closed(close);
    };
  }

  // hello with the secrets we hold: the user's (open mode) and this tab's session's.
  hello() {
    const frame = { type: "hello", ...this.credentials };
    // Read at every hello: another tab may have stored a newer user secret meanwhile.
    const secret = this.credentials.name && stored("localStorage", this.secretKey());
    if (secret) frame.secret = secret;
    const resume = stored("sessionStorage", RESUME_KEY);
    if (resume) frame.resume = resume;
    return frame;
  }

  secretKey() {
    return SECRET_KEY + this.credentials.name.toLowerCase(); // names are one user ignoring case
  }

  closed(close) {
    this.ws = null;
    const wasWelcomed = Boolean(this.welcome);
    const lived = wasWelcomed ? Date.now() - this.welcomedAt : 0;
    this.welcome = null;
    this.joinRefs.clear();
    for (const room of this.rooms.values()) room.joined = false;
    if (this.stopped) return;
    if (close.code === CLOSE_REPLACED) {
      // Only the current socket gets here (see open()): a newer connection of this tab
      // replaces the old one with the same code, but by then the old one is not this.ws. So
      // someone else holds this session now (a duplicated tab copies sessionStorage, say).
      store("sessionStorage", RESUME_KEY, null);
      this.stop(t("takenOver"), true);
      return;
    }
    if (close.code === CLOSE_REVOKED) {
      store("sessionStorage", RESUME_KEY, null);
      this.stop(t("accessRevoked"));
      return;
    }
    if (close.code === CLOSE_TOKEN_EXPIRED) {
      this.stop();
      this.emit("fatal", { code: "token_expired", message: t("sessionExpired") });
      return;
    }
    if (lived >= STABLE_AFTER_MS) this.attempt = 0;
    // Exponential backoff with jitter: a restarted server is not hit by every client at once.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    // Why we are offline is why the last good connection ended; the attempts that fail after
    // it (the server still restarting, say) do not change the story.
    if (wasWelcomed || !this.offlineReason) {
      this.offlineReason =
        close.code === 1001
          ? t("serverRestarting")
          : close.reason || t(wasWelcomed ? "connectionLost" : "serverUnreachable");
    }
    const reason = this.offlineReason;
    this.retryTimer = setTimeout(() => this.open(), delay);
    this.emit("status", { state: "offline", reason, retryAt: Date.now() + delay });
  }

  // -- what the page asks for -----------------------------------------------------------------

  // Join a room, now and after every reconnection (a room already wanted: nothing to do).
  join(name) {
    if (this.rooms.has(name)) return;
    this.rooms.set(name, { epoch: null, seq: 0, oldest: null, more: false, members: new Set(), names: {}, joined: false });
    if (this.welcome) this.sendJoin(name);
  }

  leave(name) {
    // With an id: its `left` answers it, and an unsolicited `left` (ref null) is the server's.
    if (this.forget(name) && this.welcome) this.send({ type: "leave", room: name, id: `l${++this.counter}` });
  }

  // Drop a room and its unsent messages (left, or refused by the server).
  forget(name) {
    if (!this.rooms.delete(name)) return false;
    for (const [id, say] of this.pending) if (say.room === name) this.pending.delete(id);
    return true;
  }

  // Queue a message; it is sent now if we are connected, else after the next welcome.
  say(room, text) {
    return this.post("say", room, text);
  }

  // A support agent's internal note: like a message (pending until acknowledged, resent with
  // its id), but the server shows it to agents only.
  note(room, text) {
    return this.post("note", room, text);
  }

  post(type, room, text) {
    this.counter += 1;
    const say = { type, room, text, id: `m-${this.idTag}-${this.counter}` };
    this.pending.set(say.id, say);
    if (this.welcome) this.send(say);
    this.emit("pending", { room });
    return say.id;
  }

  // Whether the server has us in the room now: typing and read frames for a room not joined
  // are refused (not_joined), so the pages send them only then.
  isJoined(name) {
    return Boolean(this.welcome && this.rooms.get(name)?.joined);
  }

  // Frames that matter only now (typing, read markers): sent if we are in the room, else
  // dropped; returns whether it was sent.
  sendNow(frame) {
    if (!this.isJoined(frame.room)) return false;
    this.send(frame);
    return true;
  }

  pendingIn(room) {
    return [...this.pending.values()].filter((say) => say.room === room);
  }

  loadOlder(name) {
    const room = this.rooms.get(name);
    if (!room || !room.more || !this.welcome) return;
    this.send({ type: "history", room: name, before: room.oldest, limit: 50 });
  }

  // Token mode: a fresh token for the same user. Later hellos use it, and the server is told
  // now, so that it does not close this session when the old token expires (4001). The page
  // decides where fresh tokens come from (login.js watches sessionStorage).
  refresh(token) {
    if (!this.credentials.token || token === this.credentials.token) return;
    this.credentials = { ...this.credentials, token };
    if (this.welcome) this.send({ type: "refresh", token, id: `r${++this.counter}` });
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  sendJoin(name) {
    const room = this.rooms.get(name);
    const id = `j${++this.counter}`;
    this.joinRefs.set(id, name);
    const frame = { type: "join", room: name, id };
    if (room.epoch !== null) frame.since = { epoch: room.epoch, seq: room.seq };
    this.send(frame);
  }

  // -- frames ---------------------------------------------------------------------------------

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    const handler = FRAME_HANDLERS[frame.type] ?? (isRoomEvent(frame) ? "onEvent" : null);
    if (handler) this[handler](frame);
    this.emit("frame", frame);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // Hand on the events not seen yet (seq above the room's last), and settle our own pending
  // messages that they contain (their ack may have been lost with the connection).
  deliver(room, events) {
    const fresh = events.filter((event) => event.epoch === room.epoch && event.seq > room.seq);
    for (const event of fresh) {
      room.seq = event.seq;
      this.settle(event);
      if (event.type === "presence") {
        if (event.event === "join") room.members.add(event.user);
        else room.members.delete(event.user);
      }
      // The latest display name each user was seen with (older transcripts have none).
      const user = event.type === "presence" ? event.user : event.from;
      if (user && event.name) room.names[user] = event.name;
    }
    return fresh;
  }

  settle(event) {
    const posted = event.type === "message" || event.type === "note";
    if (posted && event.from === this.user && this.pending.delete(event.id)) {
      this.emit("pending", { room: event.room });
    }
  }

  resendPending() {
    clearTimeout(this.resendTimer);
    this.resendTimer = null;
    if (!this.welcome) return;
    for (const say of this.pending.values()) this.send(say);
  }

  laterResend() {
    if (this.resendTimer === null) this.resendTimer = setTimeout(() => this.resendPending(), RESEND_AFTER_MS);
  }

  // -- frame handlers ----------------------------------------------------------------------

  onWelcome(frame) {
    this.welcome = frame;
    this.user = frame.user;
    this.name = frame.name || frame.user;
    store("sessionStorage", RESUME_KEY, frame.resume);
    if (frame.secret && this.credentials.name) store("localStorage", this.secretKey(), frame.secret);
    this.everWelcomed = true;
    this.welcomedAt = Date.now();
    this.offlineReason = null;
    // Frames on one connection are handled in order: the joins are done before the says.
    for (const name of this.rooms.keys()) this.sendJoin(name);
    this.resendPending();
    this.emit("status", { state: "online" });
    this.emit("welcome", frame);
  }

  onJoined(frame) {
    this.joinRefs.delete(frame.ref);
    const room = this.rooms.get(frame.room);
    if (!room) return; // left meanwhile
    room.joined = true;
    if (frame.recovered && room.epoch === frame.epoch) {
      const events = this.deliver(room, frame.history);
      room.seq = Math.max(room.seq, frame.seq);
      if (events.length) this.emit("events", { room: frame.room, events });
    } else {
      // A first join, or history we cannot resume from: start the room's list afresh.
      room.epoch = frame.epoch;
      room.seq = 0;
      const events = this.deliver(room, frame.history);
      room.seq = frame.seq;
      room.oldest = events.length ? events[0].seq : frame.seq + 1;
      room.more = room.oldest > 1;
      this.emit("reset", { room: frame.room, events, more: room.more });
    }
    // The member list as of frame.seq, the end of the history: it overrides what the
    // presence events in the history did to the set.
    room.members = new Set(frame.members);
    Object.assign(room.names, frame.names);
    this.emitMembers(frame.room, room);
  }

  emitMembers(name, room) {
    this.emit("members", { room: name, members: [...room.members], names: { ...room.names } });
  }

  // A live event: every kind counts for the room's seq (resume), known to the page or not;
  // the page decides what to show (docs/protocol.md, "Events").
  onEvent(frame) {
    const room = this.rooms.get(frame.room);
    if (!room) return; // a room we left; its last events may still be on the way
    const events = this.deliver(room, [frame]);
    if (!events.length) return;
    this.emit("events", { room: frame.room, events });
    if (frame.type === "presence") this.emitMembers(frame.room, room);
  }

  // The answer to our leave (the room is forgotten already), or the server ending our
  // membership itself: drop the room, so that no reconnection joins it again.
  onLeft(frame) {
    if (frame.ref !== null && frame.ref !== undefined) return;
    if (!this.forget(frame.room)) return;
    this.emit("removed", { room: frame.room, reason: frame.reason ?? null, by: frame.by ?? null });
  }

  onAck(frame) {
    const say = this.pending.get(frame.id);
    if (say && this.pending.delete(frame.id)) this.emit("pending", { room: say.room });
  }

  onHistory(frame) {
    const room = this.rooms.get(frame.room);
    if (!room || frame.epoch !== room.epoch) return;
    const events = frame.events.filter((event) => event.seq < room.oldest);
    if (events.length) room.oldest = events[0].seq;
    room.more = frame.more && events.length > 0;
    this.emit("older", { room: frame.room, events, more: room.more });
  }

  onMembers(frame) {
    const room = this.rooms.get(frame.room);
    if (!room) return;
    room.members = new Set(frame.members);
    Object.assign(room.names, frame.names);
    this.emitMembers(frame.room, room);
  }

  onError(frame) {
    if (!this.welcome && HELLO_REFUSALS.has(frame.code)) {
      if (frame.code === "name_taken" && this.everWelcomed) {
        // After a blip the server may not have noticed our old connection's end yet: it
        // still holds the name. Try again later; its ping timeout frees the name.
        if (this.ws) this.ws.close(1000);
        return;
      }
      this.stop();
      this.emit("fatal", { code: frame.code, message: frame.message });
      return;
    }
    const say = frame.ref ? this.pending.get(frame.ref) : undefined;
    if (say && SAY_REFUSALS.has(frame.code)) {
      this.pending.delete(say.id);
      this.emit("pending", { room: say.room });
      this.emit("problem", { code: frame.code, message: t("notSent", { message: frame.message }), ref: frame.ref });
      return;
    }
    const joinRoom = frame.ref ? this.joinRefs.get(frame.ref) : undefined;
    if (joinRoom !== undefined) {
      this.joinRefs.delete(frame.ref);
      this.forget(joinRoom);
      this.emit("joinfailed", { room: joinRoom, code: frame.code, message: frame.message });
      return;
    }
    // The server dropped a frame (rate limit; it does not say which) or could not store a
    // message: send the pending messages again in a moment, with the same ids, so none is
    // lost and none is posted twice.
    if (frame.code === "rate_limited" || frame.code === "unavailable") this.laterResend();
    this.emit("problem", { code: frame.code, message: frame.message, ref: frame.ref });
  }
}
