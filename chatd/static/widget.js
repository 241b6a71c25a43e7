// The chat button and drawer another site puts on its pages (README, "Put the chat on your
// site"):
//
//   <script src="https://chat.example.com/widget.js" defer></script>
//
// The drawer holds an iframe of this daemon's /support?embed=1, so the chat itself runs on the
// daemon's origin, under its own Content-Security-Policy, WebSocket origin and storage; the
// site only hosts a button and a frame. The daemon lets only the sites of
// `[support] embed_origins` frame that page (CSP frame-ancestors).
//
// A classic script (not a module), so that `document.currentScript` names the daemon. It
// evaluates no strings and writes no style attributes or <style> elements: it styles through
// the CSSOM (element.style), which a site's Content-Security-Policy does not restrict. The site
// allows `script-src` and `frame-src` for the daemon's origin, nothing more.
//
// The visitor's id and secret (docs/protocol.md, "Visitors") are kept by this script in the
// site's localStorage and handed to the frame in its URL's fragment, never sent to a server;
// the frame hands new ones back with postMessage, to this site's origin only. The frame
// keeps them in its own storage too, but browsers that block storage in frames of another
// site (incognito windows, Safari) would otherwise forget the visitor at every reload.
//
// Options, as data attributes of the script tag:
//   data-position  "right" (default) or "left": the corner of the button and drawer
//   data-title     the button's label and the drawer's title (default "Chat with us", in the
//                  chat's language)
//   data-lang      the chat's language (a BCP 47 tag such as "en" or "zh-CN"); default: the
//                  first of the browser's languages the daemon has texts in (README, "Languages")
//
// The texts (the button's, the close button's) come from the daemon's catalogues, a module
// import from the daemon (/i18n/, served to any origin): the button shows once they are in.
// The language chosen is passed on to the page in the frame (?lang=), so both speak it.

(async () => {
  const script = document.currentScript;
  if (!script || !script.src) return;
  const daemon = new URL(script.src).origin;
  const side = script.dataset.position === "left" ? "left" : "right";
  const { format, loadTexts, pickLanguage } = await import(new URL("/i18n/languages.js", daemon).href);
  const language = pickLanguage([script.dataset.lang, ...navigator.languages]);
  const texts = await loadTexts(language);
  const title = script.dataset.title || format(texts, "widgetTitle");
  const page = new URL("/support", daemon);
  page.searchParams.set("embed", "1");
  page.searchParams.set("lang", language);

  const VISITOR_KEY = "chatd.visitor"; // the site's localStorage: {"user", "secret"}

  function storedVisitor() {
    try {
      const visitor = JSON.parse(localStorage.getItem(VISITOR_KEY));
      return typeof visitor?.user === "string" && typeof visitor?.secret === "string" ? visitor : null;
    } catch {
      return null;
    }
  }

  function keepVisitor(visitor) {
    try {
      if (visitor) localStorage.setItem(VISITOR_KEY, JSON.stringify(visitor));
      else localStorage.removeItem(VISITOR_KEY);
    } catch {
      // no storage on the site either: the visitor is new at each page
    }
  }

  function frameUrl() {
    const handoff = new URLSearchParams({ origin: window.location.origin });
    const visitor = storedVisitor();
    if (visitor) {
      handoff.set("user", visitor.user);
      handoff.set("secret", visitor.secret);
    }
    return `${page.href}#${handoff}`;
  }

  const ACCENT = "#2456c7";
  const LAYER = "2147483000"; // above the site's own content

  function styled(tag, style) {
    const element = document.createElement(tag);
    Object.assign(element.style, style);
    return element;
  }

  const button = styled("button", {
    position: "fixed",
    bottom: "20px",
    [side]: "20px",
    zIndex: LAYER,
    padding: "12px 18px",
    border: "none",
    borderRadius: "24px",
    background: ACCENT,
    color: "#fff",
    font: "600 15px/1.2 system-ui, sans-serif",
    boxShadow: "0 4px 14px rgba(0, 0, 0, 0.25)",
    cursor: "pointer",
  });
  button.type = "button";
  button.textContent = title;
  button.setAttribute("aria-expanded", "false");
  button.dataset.chatdWidget = "button";
  button.lang = language;

  const drawer = styled("div", {
    position: "fixed",
    bottom: "80px",
    [side]: "20px",
    zIndex: LAYER,
    width: "min(380px, calc(100vw - 40px))",
    height: "min(600px, calc(100vh - 100px))",
    display: "none",
    flexDirection: "column",
    background: "#fff",
    borderRadius: "12px",
    overflow: "hidden",
    boxShadow: "0 8px 30px rgba(0, 0, 0, 0.3)",
  });
  drawer.setAttribute("role", "dialog");
  drawer.setAttribute("aria-label", title);
  drawer.dataset.chatdWidget = "drawer";
  drawer.lang = language;

  const head = styled("div", {
    display: "flex",
    alignItems: "center",
    justifyContent: "space-between",
    padding: "8px 12px",
    background: ACCENT,
    color: "#fff",
    font: "600 15px/1.2 system-ui, sans-serif",
  });
  const heading = document.createElement("span");
  heading.textContent = title;
  const close = styled("button", {
    border: "none",
    background: "transparent",
    color: "#fff",
    font: "20px/1 system-ui, sans-serif",
    cursor: "pointer",
  });
  close.type = "button";
  close.textContent = "×";
  close.setAttribute("aria-label", format(texts, "closeChat"));
  head.append(heading, close);
  drawer.append(head);

  let frame = null; // made at the first opening: the chat connects only when it is wanted

  function open() {
    if (!frame) {
      frame = styled("iframe", { flex: "1", width: "100%", border: "none" });
      frame.src = frameUrl();
      frame.title = title;
      frame.dataset.chatdWidget = "frame";
      drawer.append(frame);
    }
    drawer.style.display = "flex";
    button.setAttribute("aria-expanded", "true");
    frame.focus();
  }

  function shut() {
    drawer.style.display = "none";
    button.setAttribute("aria-expanded", "false");
    button.focus();
  }

  window.addEventListener("message", (event) => {
    if (!frame || event.source !== frame.contentWindow || event.origin !== daemon) return;
    if (event.data?.type !== "chatd-visitor") return;
    const { user, secret } = event.data;
    keepVisitor(typeof user === "string" && typeof secret === "string" ? { user, secret } : null);
  });
  button.addEventListener("click", () => (drawer.style.display === "none" ? open() : shut()));
  close.addEventListener("click", shut);
  drawer.addEventListener("keydown", (event) => {
    if (event.key === "Escape") shut();
  });
  document.body.append(drawer, button);
})();
