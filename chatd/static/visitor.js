// The support page embedded by widget.js (/support?embed=1): no page chrome and no sign-in
// form. The visitor is anonymous (`[support] visitors = anonymous`, docs/protocol.md,
// "Visitors"): the first hello asks for a visitor id; the id and its secret are kept so that
// the visitor is the same user (the same conversation) after a reload, after closing every
// tab, and after a restart of the daemon.
//
// They are kept twice: in this origin's localStorage, and by widget.js in the embedding
// site's. The widget hands them in with the frame's URL fragment (`#origin=…&user=…&secret=…`,
// which no server sees) and the page hands new ones back with postMessage to that origin
// only; browsers that block storage in a frame of another site keep them that way. Only the
// sites of `[support] embed_origins` can frame this page (CSP frame-ancestors), and a message
// posted to an origin that is not the parent's is not delivered.

import { t } from "./texts.js";

const VISITOR_KEY = "chatd.visitor"; // localStorage: {"user", "secret"}
const ORIGIN = /^https?:\/\/[A-Za-z0-9.\-[\]:]+$/;

export function embedded(loc = window.location) {
  return new URLSearchParams(loc.search).get("embed") === "1";
}

function asVisitor(value) {
  return typeof value?.user === "string" && typeof value?.secret === "string" ? { user: value.user, secret: value.secret } : null;
}

function ownStoredVisitor() {
  try {
    return asVisitor(JSON.parse(localStorage.getItem(VISITOR_KEY)));
  } catch {
    return null;
  }
}

// What widget.js put in the fragment; the fragment is then dropped from the address.
function handoff() {
  const fields = new URLSearchParams(window.location.hash.slice(1));
  history.replaceState(null, "", window.location.pathname + window.location.search);
  const origin = fields.get("origin");
  return {
    parentOrigin: origin && ORIGIN.test(origin) ? origin : null,
    visitor: asVisitor({ user: fields.get("user"), secret: fields.get("secret") }),
  };
}

function credentialsFor(visitor) {
  return visitor ? { visitor: true, name: visitor.user, secret: visitor.secret } : { visitor: true };
}

// Runs the embedded page's session: start(credentials) returns the ChatConnection. A stored
// visitor the server no longer knows (its key was replaced) starts afresh, once; any other
// refusal (a server that takes no anonymous visitors) is shown by the page and ends here.
export async function visitorSession(start, notice) {
  document.documentElement.classList.add("embedded");
  const given = handoff();
  let visitor = given.visitor || ownStoredVisitor();
  const keep = (value) => {
    visitor = value;
    try {
      if (value) localStorage.setItem(VISITOR_KEY, JSON.stringify(value));
      else localStorage.removeItem(VISITOR_KEY);
    } catch {
      // storage blocked in this frame: the widget keeps it for us
    }
    if (given.parentOrigin && window.parent !== window) {
      window.parent.postMessage({ type: "chatd-visitor", user: value?.user ?? null, secret: value?.secret ?? null }, given.parentOrigin);
    }
  };
  for (;;) {
    const connection = start(credentialsFor(visitor));
    connection.addEventListener("welcome", ({ detail }) => {
      if (!detail.secret || (visitor && visitor.user === detail.user)) return;
      keep({ user: detail.user, secret: detail.secret });
      connection.credentials = credentialsFor(visitor); // reconnections come back as this visitor
    });
    const fatal = await new Promise((resolve) => connection.addEventListener("fatal", (event) => resolve(event.detail)));
    if (!visitor || fatal.code !== "auth_failed") {
      notice.show(t("chatUnavailable", { message: fatal.message }), { sticky: true });
      return;
    }
    keep(null);
  }
}

// The "leave your name and email" form: a `profile` frame, which agents see.
export function profileForm(form, connection) {
  form.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    const email = form.elements.email.value.trim();
    const current = connection();
    if ((!name && !email) || !current?.welcome) return;
    current.send({ type: "profile", name: name || null, email: email || null, id: `profile-${Date.now()}` });
    form.querySelector(".hint").textContent = t("profileSaved");
  });
}
