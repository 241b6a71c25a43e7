// The page's language and its texts (i18n/, README "Languages"). The language is the page
// address's ?lang= (the widget passes its data-lang so), else the first of the browser's
// languages a catalogue answers to, else English; <html lang> says which.
//
// Static text in the HTML carries its key: data-i18n="key" for the element's text,
// data-i18n-attr="attribute:key ..." for attributes (aria-label, placeholder, title); both are
// filled here, when the module is first imported (before any page code runs).

import { format, loadTexts, pickLanguage } from "./i18n/languages.js";

export const language = pickLanguage([new URLSearchParams(window.location.search).get("lang"), ...navigator.languages]);
const texts = await loadTexts(language);

// t("typing", {names}): the text `key` in the page's language.
export function t(key, values) {
  return format(texts, key, values);
}

function translate(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of node.dataset.i18nAttr.split(" ")) {
      const [attribute, key] = pair.split(":");
      node.setAttribute(attribute, t(key));
    }
  }
}

document.documentElement.lang = language;
translate(document);
