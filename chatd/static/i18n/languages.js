// The languages of the pages and the widget (README, "Languages"): each is a catalogue in this
// directory, i18n/TAG.js, and a line here with the browser language tags it answers to
// (compared without regard to case; a tag not listed, such as zh-TW, is not that language).
// Adding a language is adding its catalogue and its line. The first is the default.

export const LANGUAGES = [
  { tag: "en", answers: ["en", "en-*"] },
  { tag: "zh-CN", answers: ["zh", "zh-CN", "zh-Hans", "zh-Hans-*", "zh-SG"] },
];

function answers(pattern, wanted) {
  const [p, w] = [pattern.toLowerCase(), wanted.toLowerCase()];
  return p.endsWith("-*") ? w.startsWith(p.slice(0, -1)) : p === w;
}

// The first of `wanted` (language tags, the most wanted first; empty ones skipped) that a
// catalogue answers to, else the default.
export function pickLanguage(wanted) {
  for (const tag of wanted) {
    const language = tag && LANGUAGES.find((candidate) => candidate.answers.some((pattern) => answers(pattern, tag)));
    if (language) return language.tag;
  }
  return LANGUAGES[0].tag;
}

// The catalogue of a language pickLanguage chose.
export async function loadTexts(tag) {
  return (await import(`./${tag}.js`)).default;
}

// A text of the catalogue: its string with each {name} replaced by values[name], or what its
// function makes of the values.
export function format(texts, key, values = {}) {
  const text = texts[key];
  if (typeof text === "function") return text(values);
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}
