"""The pages' catalogues (chatd/static/i18n/): every language has every text, and every key
the pages use is in them. The catalogues are read as text: an entry starts its own line, two
spaces in (`  key: ...`), as en.js says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "chatd" / "static"
CATALOGUES = sorted((STATIC / "i18n").glob("*.js"))
ENTRY = re.compile(r"^  (\w+):", re.MULTILINE)
LANGUAGE_LINE = re.compile(r'^  \{ tag: "([\w-]+)"', re.MULTILINE)


def keys(path: Path) -> list[str]:
    body = path.read_text(encoding="utf-8")
    assert "export default {\n" in body and body.rstrip().endswith("};"), path.name
    return ENTRY.findall(body)


def catalogue_paths() -> list[Path]:
    return [path for path in CATALOGUES if path.name != "languages.js"]


def test_each_language_listed_has_its_catalogue_and_each_catalogue_is_listed():
    listed = LANGUAGE_LINE.findall((STATIC / "i18n" / "languages.js").read_text())
    assert listed[0] == "en"
    assert sorted(f"{tag}.js" for tag in listed) == sorted(p.name for p in catalogue_paths())


@pytest.mark.parametrize("path", catalogue_paths(), ids=lambda path: path.name)
def test_a_catalogue_has_exactly_the_english_keys_once_each(path):
    english = keys(STATIC / "i18n" / "en.js")
    found = keys(path)
    assert len(found) == len(set(found)), "a key twice"
    assert sorted(found) == sorted(english)
    assert len(english) > 100  # the reader found the entries


def test_every_key_the_pages_use_is_in_the_catalogues():
    english = set(keys(STATIC / "i18n" / "en.js"))
    used = set()
    for page in STATIC.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        used |= set(re.findall(r'data-i18n="(\w+)"', text))
        for pairs in re.findall(r'data-i18n-attr="([^"]+)"', text):
            used |= {pair.split(":")[1] for pair in pairs.split()}
    for script in STATIC.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        used |= set(re.findall(r'\bt\("(\w+)"', text))
        used |= set(re.findall(r'\bformat\(texts, "(\w+)"', text))
        # t(flag ? "one" : "other", ...): both keys
        for one, other in re.findall(r'\bt\([^()"]*\? "(\w+)" : "(\w+)"', text):
            used |= {one, other}
    assert used - english == set()
    assert len(used) > 100
