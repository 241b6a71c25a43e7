// The desk's canned responses ([support] canned_file; docs/protocol.md, "Canned responses"):
// typing "/" and the start of a key in the composer lists the responses whose key starts with
// it, in a listbox the textarea controls (aria-activedescendant: the focus stays in the
// textarea). Up and Down move, Enter or Tab insert the response in place of "/key", Escape
// closes the list; a click inserts too.

import { el } from "./ui.js";

const SHOWN = 8;
// "/" and the start of a key right before the caret, at the start of the text or after a space.
const TRIGGER = /(?:^|\s)\/([a-z0-9_-]*)$/i;

export class CannedPicker {
  // Add it before the composer's own keydown handler: it takes Enter while the list is open.
  constructor(textarea, listbox) {
    this.textarea = textarea;
    this.listbox = listbox;
    this.responses = []; // [{key, text}], from welcome.canned or the latest `canned` frame
    this.matches = [];
    this.active = 0;
    this.start = -1; // where "/key" starts in the text, while the list is open
    this.end = -1;
    this.dismissed = -1; // the "/" whose list Escape closed: it does not open again
    textarea.addEventListener("input", () => this.refresh());
    textarea.addEventListener("keydown", (event) => this.key(event));
    textarea.addEventListener("blur", () => this.close());
    // A click on an option must not take the focus from the textarea.
    listbox.addEventListener("mousedown", (event) => event.preventDefault());
  }

  setResponses(responses) {
    this.responses = Array.isArray(responses) ? responses : [];
    this.refresh();
  }

  refresh() {
    const { value, selectionStart, selectionEnd } = this.textarea;
    const match = selectionStart === selectionEnd ? TRIGGER.exec(value.slice(0, selectionStart)) : null;
    const typed = match ? match[1].toLowerCase() : "";
    const start = match ? selectionStart - typed.length - 1 : -1;
    this.matches = match && start !== this.dismissed ? this.responses.filter((response) => response.key.startsWith(typed)).slice(0, SHOWN) : [];
    if (start !== this.dismissed) this.dismissed = -1;
    if (!this.matches.length) {
      this.close();
      return;
    }
    this.start = start;
    this.end = selectionStart;
    this.active = 0;
    this.render();
  }

  render() {
    this.listbox.replaceChildren(
      ...this.matches.map((response, index) =>
        el(
          "li",
          {
            id: `canned-option-${index}`,
            class: "canned-option",
            role: "option",
            "aria-selected": index === this.active ? "true" : "false",
            onclick: () => this.insert(index),
          },
          el("span", { class: "canned-key" }, `/${response.key}`),
          el("span", { class: "canned-text" }, response.text),
        ),
      ),
    );
    this.listbox.hidden = false;
    this.textarea.setAttribute("aria-activedescendant", `canned-option-${this.active}`);
    this.listbox.children[this.active].scrollIntoView({ block: "nearest" });
  }

  key(event) {
    if (this.listbox.hidden || event.isComposing) return;
    const count = this.matches.length;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      this.active = (this.active + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
      this.render();
    } else if ((event.key === "Enter" && !event.shiftKey) || event.key === "Tab") {
      this.insert(this.active);
    } else if (event.key === "Escape") {
      this.dismissed = this.start;
      this.close();
    } else {
      return;
    }
    event.preventDefault();
  }

  insert(index) {
    const { text } = this.matches[index];
    const { value } = this.textarea;
    this.textarea.value = value.slice(0, this.start) + text + value.slice(this.end);
    const caret = this.start + text.length;
    this.textarea.setSelectionRange(caret, caret);
    this.close();
    this.textarea.focus();
    // The composer grows to fit, and the others typing in the room hear of it.
    this.textarea.dispatchEvent(new Event("input"));
  }

  close() {
    this.listbox.hidden = true;
    this.listbox.replaceChildren();
    this.textarea.removeAttribute("aria-activedescendant");
    this.matches = [];
    this.start = this.end = -1;
  }
}
