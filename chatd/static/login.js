// The sign-in form every page shows first: a name (open mode) or an access token.
//
// Tokens (token mode, docs/protocol.md) are sent in hello only, never in a URL: a `?token=`
// would end up in proxy and access logs and in the browser's history. A token comes from
// sessionStorage["chatd.token"] (where a sign-in page of the operator's may put it) or from
// the paste field, and is kept in sessionStorage for this tab only, so a reload signs in again.
//
// Token refresh, kept simple: while signed in with a token, the page looks at
// sessionStorage["chatd.token"] every few seconds; when the operator's sign-in page (or a
// script of theirs) has put a different token there, the connection sends it in a `refresh`
// frame and uses it from then on, so the session outlives the old token's expiry instead of
// being closed with 4001. (A `storage` event would not do: it fires only in *other* tabs.)

import { t } from "./texts.js";

const TOKEN_POLL_MS = 5000;
const TOKEN_KEY = "chatd.token";
const NAME_KEY = "chatd.name";
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// Shows the form until it yields credentials; resolves to {name} or {token}. A token already
// stored for this tab is used without asking (a refused one is removed first: see session).
export function signIn(form, { error = "" } = {}) {
  const nameInput = form.querySelector("[name=name]");
  const tokenInput = form.querySelector("[name=token]");
  const errorLine = form.querySelector(".form-error");
  const token = storedToken();
  if (token) return Promise.resolve({ token });

  form.hidden = false;
  errorLine.textContent = error;
  nameInput.value = nameInput.value || localStorage.getItem(NAME_KEY) || "";
  nameInput.focus();
  return new Promise((resolve) => {
    const submit = (event) => {
      event.preventDefault();
      const pasted = tokenInput.value.trim();
      const name = nameInput.value.trim();
      if (pasted) {
        sessionStorage.setItem(TOKEN_KEY, pasted);
        tokenInput.value = "";
        done({ token: pasted });
      } else if (NAME.test(name)) {
        localStorage.setItem(NAME_KEY, name);
        done({ name });
      } else {
        errorLine.textContent = name
          ? t("badName")
          : t("nameMissing");
        nameInput.focus();
      }
    };
    const done = (credentials) => {
      form.removeEventListener("submit", submit);
      form.hidden = true;
      errorLine.textContent = "";
      resolve(credentials);
    };
    form.addEventListener("submit", submit);
  });
}

// Runs a page's session: sign in, connect, and on a refusal (bad token, name taken, token
// expired) show the form again with the server's words. start(credentials) returns the
// ChatConnection.
export async function session(form, start) {
  let error = "";
  for (;;) {
    const credentials = await signIn(form, { error });
    const connection = start(credentials);
    const watch = credentials.token ? setInterval(() => freshToken(connection), TOKEN_POLL_MS) : null;
    const fatal = await new Promise((resolve) => connection.addEventListener("fatal", (event) => resolve(event.detail)));
    clearInterval(watch);
    // Forget the token that failed; one stored since (a fresh one) is tried without asking.
    if (credentials.token && storedToken() === connection.credentials.token) forgetToken();
    error = fatal.message;
  }
}

function freshToken(connection) {
  const token = storedToken();
  if (token) connection.refresh(token);
}
