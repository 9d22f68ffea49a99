"""The configuration documentation covers every key the parser knows.

The list of keys comes from the source: every `known_keys(TABLE, "PREFIX", {"a", "b", ...})`
call in src/core/config.cpp. The call with the empty prefix lists the top-level sections, and
each other call lists the keys of section PREFIX. Each key must then be documented in:

- docs/configuration.md, as `section.key`, or by name under a heading that names the section
  (`## [smtp]`, or `## [[name]]` for an array of tables);
- etc/tern.toml.example, as a real (uncommented) key of its section, with a comment above it,
  and with the default from src/core/config.h; the file must also pass `tern check-config`;
- docs/man/tern.toml.5, in the subsection (`.SS`) of its section.

So a key added to config.cpp without documentation fails here. The extraction and the checks
are plain functions. test_checker_* run them on sources with an extra key to show that such a
key is reported.

Environment: TERN_BIN is the tern binary (default build/asan/tern in this repository), and
TERN_CONFIG_CPP may name another copy of config.cpp to extract the keys from.
Standard library and pytest only.
"""
from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_independent  # static checks of the documentation

ROOT = Path(__file__).resolve().parents[2]
CONFIG_CPP = Path(os.environ.get("TERN_CONFIG_CPP", ROOT / "src" / "core" / "config.cpp"))
CONFIG_H = ROOT / "src" / "core" / "config.h"
DOCS = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "etc" / "tern.toml.example"
MAN5 = ROOT / "docs" / "man" / "tern.toml.5"
TERN_BIN = os.environ.get("TERN_BIN", str(ROOT / "build" / "asan" / "tern"))


# ---------------------------------------------------------------------------------------------
# Extraction from the C++ source
# ---------------------------------------------------------------------------------------------

# known_keys(<table expression>, "<prefix>", {"key", "key", ...})
_KNOWN_KEYS_CALL = re.compile(r'\bknown_keys\s*\(\s*([^,(){};]+?)\s*,\s*"([^"]*)"\s*,\s*\{([^{}]*)\}\s*\)', re.S)
_ANY_KNOWN_KEYS_CALL = re.compile(r"\bknown_keys\s*\(")
_DEFINITION = re.compile(r"\bvoid\s+known_keys\s*\(")


class Schema:
    """Sections (from the root call) and (section, key) pairs (from the other calls)."""

    def __init__(self, sections: list[str], keys: list[tuple[str, str]]):
        self.sections = sections
        self.keys = keys

    def keys_of(self, section: str) -> list[str]:
        return [k for s, k in self.keys if s == section]


def _strip_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    return re.sub(r"//[^\n]*", "", source)


def extract_schema(source: str) -> Schema:
    """Parses the known_keys(...) calls of a config.cpp text."""
    sections: list[str] = []
    keys: list[tuple[str, str]] = []
    for call in _KNOWN_KEYS_CALL.finditer(_strip_comments(source)):
        prefix, body = call.group(2), call.group(3)
        names = re.findall(r'"([^"]*)"', body)
        leftover = re.sub(r'"[^"]*"', "", body)
        if leftover.replace(",", "").strip():
            raise ValueError(f"known_keys list with something other than string literals: {{{body}}}")
        if prefix == "":
            sections += [n for n in names if n not in sections]
        else:
            keys += [(prefix, n) for n in names if (prefix, n) not in keys]
    return Schema(sections, keys)


def unparsed_known_keys_calls(source: str) -> int:
    """Calls of known_keys that extract_schema cannot read (so it would skip their keys)."""
    text = _strip_comments(source)
    calls = len(_ANY_KNOWN_KEYS_CALL.findall(text)) - len(_DEFINITION.findall(text))
    return calls - len(_KNOWN_KEYS_CALL.findall(text))


def extract_defaults(header: str) -> dict[tuple[str, str], object]:
    """(section, key) -> default, from `struct X { T key = value; ... } section;` in config.h."""
    defaults: dict[tuple[str, str], object] = {}
    for struct in re.finditer(r"struct\s+\w+\s*\{([^{}]*)\}\s*(\w+)\s*;", _strip_comments(header)):
        body, section = struct.group(1), struct.group(2)
        for member in re.finditer(r'\b(\w+)\s*=\s*("[^"]*"|\d+)\s*;', body):
            value = member.group(2)
            defaults[(section, member.group(1))] = value[1:-1] if value.startswith('"') else int(value)
    return defaults


# ---------------------------------------------------------------------------------------------
# Checks: each returns what is missing, so the tests can report it and the self-tests can
# confirm that a missing key is found.
# ---------------------------------------------------------------------------------------------

def _word(name: str) -> str:
    return rf"(?<![\w.]){re.escape(name)}(?![\w])"


def _section_pattern(section: str) -> str:
    return rf"\[\[?{re.escape(section)}\]\]?"


def markdown_section_blocks(doc: str, section: str) -> list[str]:
    """The text under each Markdown heading that names [section] or [[section]], up to the next
    heading of the same or a higher level. Lines inside ``` fences are never headings."""
    lines = doc.splitlines()
    headings: list[tuple[int, int, str]] = []  # (line index, level, text)
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m and not fenced:
            headings.append((i, len(m.group(1)), m.group(2)))
    blocks = []
    for n, (i, level, text) in enumerate(headings):
        if not re.search(_section_pattern(section), text):
            continue
        end = len(lines)
        for j, other_level, _ in headings[n + 1:]:
            if other_level <= level:
                end = j
                break
        blocks.append("\n".join(lines[i + 1:end]))
    return blocks


def missing_from_docs(schema: Schema, doc: str) -> list[str]:
    missing = []
    for section in schema.sections:
        if not markdown_section_blocks(doc, section):
            missing.append(f"[{section}] (no heading names it)")
    for section, key in schema.keys:
        if re.search(_word(f"{section}.{key}"), doc):
            continue
        if any(re.search(_word(key), block) for block in markdown_section_blocks(doc, section)):
            continue
        missing.append(f"{section}.{key}")
    return missing


def missing_from_example(schema: Schema, text: str) -> list[str]:
    """Sections and keys not present as real TOML in the example (comments do not count)."""
    data = tomllib.loads(text)
    missing = []
    for section in schema.sections:
        if section not in data:
            missing.append(f"[{section}]")
    for section, key in schema.keys:
        value = data
        for part in section.split("."):  # "smtp.access" is data["smtp"]["access"]
            value = value.get(part) if isinstance(value, dict) else None
        tables = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        if not any(isinstance(t, dict) and key in t for t in tables):
            missing.append(f"{section}.{key}")
    return missing


def unannotated_in_example(schema: Schema, text: str) -> list[str]:
    """Keys whose first occurrence in the example has no comment line right above it."""
    first: dict[tuple[str, str], int] = {}
    lines = text.splitlines()
    section = None
    for i, line in enumerate(lines):
        header = re.match(r"^\s*\[\[?\s*([\w.-]+)\s*\]\]?\s*(#.*)?$", line)
        if header:
            section = header.group(1)
            continue
        assignment = re.match(r"^\s*([\w-]+)\s*=", line)
        if assignment and section is not None:
            first.setdefault((section, assignment.group(1)), i)
    unannotated = []
    for section_key in schema.keys:
        i = first.get(section_key)
        if i is None:
            continue  # reported by missing_from_example
        above = [l for l in lines[:i] if l.strip()]
        if not above or not above[-1].lstrip().startswith("#"):
            unannotated.append(".".join(section_key))
    return unannotated


def wrong_defaults_in_example(defaults: dict[tuple[str, str], object], text: str) -> list[str]:
    data = tomllib.loads(text)
    wrong = []
    for (section, key), default in defaults.items():
        table = data.get(section)
        if isinstance(table, dict) and key in table and table[key] != default:
            wrong.append(f"{section}.{key} = {table[key]!r}, but the default is {default!r}")
    return wrong


def missing_from_man(schema: Schema, roff: str) -> list[str]:
    """Keys not named in the .SS subsection of their section in tern.toml(5)."""
    blocks: dict[str, str] = {}
    for part in re.split(r"(?m)^\.S[SH]\s+", roff)[1:]:
        title, _, body = part.partition("\n")
        m = re.search(r"\[\[?([\w.-]+)\]\]?", title)
        if m:
            blocks[m.group(1)] = blocks.get(m.group(1), "") + body
    missing = []
    for section in schema.sections:
        if section not in blocks:
            missing.append(f"[{section}]")
    for section, key in schema.keys:
        if not re.search(_word(key.replace("-", r"\-")), blocks.get(section, "")):
            missing.append(f"{section}.{key}")
    return missing


# ---------------------------------------------------------------------------------------------
# The real files
# ---------------------------------------------------------------------------------------------

SOURCE = CONFIG_CPP.read_text()
SCHEMA = extract_schema(SOURCE)


def _read(path: Path) -> str:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return path.read_text()


def test_schema_extraction_reads_every_known_keys_call():
    assert unparsed_known_keys_calls(SOURCE) == 0, (
        f"{CONFIG_CPP}: a known_keys(...) call is not in the form extract_schema() reads; "
        "update the regular expression in tests/integration/test_docs.py")
    assert SCHEMA.sections, "no root known_keys(root, \"\", {...}) call found"
    for section, _ in SCHEMA.keys:  # "smtp.access": the [[smtp.access]] tables inside [smtp]
        parent, _, child = section.partition(".")
        assert parent in SCHEMA.sections, f"keys for section {section!r}, which the root call does not list"
        assert not child or (parent, child) in SCHEMA.keys, f"{section!r}: [{parent}] does not list {child!r}"
    for section in ("server", "run_as", "smtp", "queue", "directory", "delivery"):
        assert SCHEMA.keys_of(section), f"no keys extracted for [{section}]"


@pytest.mark.parametrize("section", SCHEMA.sections)
def test_section_is_documented(section):
    one = Schema([section], [])
    missing = {
        "docs/configuration.md (a heading naming it)": missing_from_docs(one, _read(DOCS)),
        "etc/tern.toml.example": missing_from_example(one, _read(EXAMPLE)),
        "docs/man/tern.toml.5 (a .SS naming it)": missing_from_man(one, _read(MAN5)),
    }
    assert not [f for f, m in missing.items() if m], (
        f"section [{section}] is not documented in: {', '.join(f for f, m in missing.items() if m)}")


@pytest.mark.parametrize("section,key", SCHEMA.keys, ids=[f"{s}.{k}" for s, k in SCHEMA.keys])
def test_key_is_documented(section, key):
    one = Schema([], [(section, key)])
    missing = {
        "docs/configuration.md": missing_from_docs(one, _read(DOCS)),
        "etc/tern.toml.example (set as a real key)": missing_from_example(one, _read(EXAMPLE)),
        "etc/tern.toml.example (a comment line above it)": unannotated_in_example(one, _read(EXAMPLE)),
        "docs/man/tern.toml.5": missing_from_man(one, _read(MAN5)),
    }
    assert not [f for f, m in missing.items() if m], (
        f"{section}.{key} is not documented in: {', '.join(f for f, m in missing.items() if m)}")


def test_example_shows_the_defaults():
    defaults = extract_defaults(CONFIG_H.read_text())
    assert ("smtp", "max_message_size") in defaults and ("run_as", "smtp") in defaults
    assert not wrong_defaults_in_example(defaults, _read(EXAMPLE))


def test_docs_table_shows_the_defaults():
    doc = _read(DOCS)
    for (section, key), default in extract_defaults(CONFIG_H.read_text()).items():
        shown = f'`"{default}"`' if isinstance(default, str) else f"`{default}`"
        rows = [l for l in doc.splitlines() if l.startswith(f"| `{section}.{key}` |")]
        assert rows, f"no row for {section}.{key} in the table of docs/configuration.md"
        assert shown in rows[0], f"the row for {section}.{key} does not show the default {shown}"


def test_example_passes_check_config():
    assert os.access(TERN_BIN, os.X_OK), f"tern binary not found: {TERN_BIN} (run `make build-asan` or set TERN_BIN)"
    r = subprocess.run([TERN_BIN, "check-config", str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"tern check-config {EXAMPLE} failed:\n{r.stderr}"
    assert r.stdout.startswith(f"{EXAMPLE}: ok ("), r.stdout
    assert r.stderr == ""


# ---------------------------------------------------------------------------------------------
# Self-tests of the checker: a key or section added to the parser without documentation is
# reported.
# ---------------------------------------------------------------------------------------------

SMALL_SOURCE = r'''
  // known_keys(ignored, "comment", {"not_a_key"});
  c.known_keys(root, "", {"server", "tls"});
  if (const toml::table* server = c.table(root, "server")) {
    c.known_keys(*server, "server", {"hostname", "data_dir"});
  }
  c.known_keys(t,
               "tls", {"certificate",
                       "key"});
'''


def test_checker_extracts_sections_and_keys_from_a_small_source():
    schema = extract_schema(SMALL_SOURCE)
    assert schema.sections == ["server", "tls"]
    assert schema.keys == [("server", "hostname"), ("server", "data_dir"), ("tls", "certificate"), ("tls", "key")]
    assert unparsed_known_keys_calls(SMALL_SOURCE) == 0
    assert unparsed_known_keys_calls(SMALL_SOURCE + 'c.known_keys(t, prefix, names);\n') == 1


def _newly_missing(check, schema: Schema, text: str) -> list[str]:
    """What `check` reports for `schema` beyond what it reports for the real schema."""
    before = set(check(SCHEMA, text))
    return [m for m in check(schema, text) if m not in before]


def test_checker_reports_a_key_added_without_documentation():
    source = SOURCE + '\n  c.known_keys(*smtp, "smtp", {"fake_key_for_docs_test"});\n'
    schema = extract_schema(source)
    assert ("smtp", "fake_key_for_docs_test") in schema.keys
    assert _newly_missing(missing_from_docs, schema, _read(DOCS)) == ["smtp.fake_key_for_docs_test"]
    assert _newly_missing(missing_from_example, schema, _read(EXAMPLE)) == ["smtp.fake_key_for_docs_test"]
    assert _newly_missing(missing_from_man, schema, _read(MAN5)) == ["smtp.fake_key_for_docs_test"]


def test_checker_reports_a_section_added_without_documentation():
    source = re.sub(r'(known_keys\s*\(\s*root\s*,\s*""\s*,\s*\{)', r'\1"fake_section", ', SOURCE, count=1)
    assert source != SOURCE, "the root known_keys call changed form; update this self-test"
    source += '\n  c.known_keys(*fake, "fake_section", {"colour"});\n'
    schema = extract_schema(source)
    assert "fake_section" in schema.sections
    assert _newly_missing(missing_from_docs, schema, _read(DOCS)) == [
        "[fake_section] (no heading names it)", "fake_section.colour"]
    assert _newly_missing(missing_from_example, schema, _read(EXAMPLE)) == ["[fake_section]", "fake_section.colour"]
    assert _newly_missing(missing_from_man, schema, _read(MAN5)) == ["[fake_section]", "fake_section.colour"]


def test_checker_reports_a_wrong_default():
    defaults = extract_defaults("struct Smtp {\n  std::vector<int> listen;\n  uint32_t max_errors = 10;\n} smtp;\n")
    assert defaults == {("smtp", "max_errors"): 10}
    assert wrong_defaults_in_example(defaults, "[smtp]\nmax_errors = 10\n") == []
    assert wrong_defaults_in_example(defaults, "[smtp]\nmax_errors = 5\n") == [
        "smtp.max_errors = 5, but the default is 10"]


def test_checker_ignores_keys_only_mentioned_in_comments_or_elsewhere():
    schema = Schema(["smtp"], [("smtp", "listen"), ("smtp", "max_errors")])
    commented_out = '[smtp]\n# max_errors = 10\nlisten = ["0.0.0.0:25"]\n'
    assert missing_from_example(schema, commented_out) == ["smtp.max_errors"]
    no_comment = '[smtp]\nlisten = ["0.0.0.0:25"]\n# The error limit.\nmax_errors = 10\n'
    assert unannotated_in_example(schema, no_comment) == ["smtp.listen"]
    # "# [queue]" inside a code fence is not a heading, so listen stays under [smtp].
    doc = "## [queue]\nmax_errors\n## [smtp]\n```sh\n# [queue]\n```\nlisten\n"
    assert missing_from_docs(schema, doc) == ["smtp.max_errors"]
