#!/usr/bin/python3
"""Prints an SPF conformance suite of the openspf.org YAML format (Debian's python3-spf ships
rfc7208-tests.yml.gz and rfc4408-tests.yml.gz in /usr/share/doc/python3-spf/) as JSON, for
tests/unit/spf_test.cpp, which has no YAML reader.

    /usr/bin/python3 tests/unit/spf_suite_json.py FILE.yml[.gz]

Output: a list of scenarios, each
    {"description": str,
     "zone": {name: [entry, ...]},            names lowercased, without the trailing dot
     "tests": [{"id", "spec", "helo", "host", "mailfrom", "result": [str, ...],
                "explanation": str or null}]}
and each entry one of
    {"type": "TIMEOUT"}                              every question for the name times out
    {"type": T, "timeout": true}                     questions of type T time out
    {"type": "TXT", "strings": [str, ...]}           one TXT record (its character-strings)
    {"type": "A" | "AAAA" | "PTR" | "CNAME", "value": str}
    {"type": "MX", "preference": int, "host": str}

The suites' own driver (pyspf's testspf.py) serves a name's type SPF records as TXT records too
when the name has no TXT entry of its own (even "TXT: NONE" counts as one); "NONE" values are
left out. This does the same, so the entries hold no SPF type: RFC 7208 implementations never
ask for it. Strings are given as YAML holds them; JSON carries them as UTF-8, as pyspf's driver
encodes them.
"""
import gzip
import json
import sys

import yaml


def entries(records):
    out = []
    spf = []
    has_txt = False
    for record in records:
        if record == "TIMEOUT":
            out.append({"type": "TIMEOUT"})
            continue
        if not isinstance(record, dict) or len(record) != 1:
            raise SystemExit(f"unexpected zone entry {record!r}")
        (kind, value), = record.items()
        if kind in ("TXT", "SPF"):
            if kind == "TXT":
                has_txt = True
            if value == "TIMEOUT":
                if kind == "TXT":
                    out.append({"type": "TXT", "timeout": True})
                continue
            strings = [value] if isinstance(value, str) else list(value)
            if strings == ["NONE"]:
                continue
            if kind == "TXT":
                out.append({"type": "TXT", "strings": strings})
            else:
                spf.append({"type": "TXT", "strings": strings})
        elif value == "TIMEOUT":
            out.append({"type": kind, "timeout": True})
        elif kind == "MX":
            out.append({"type": "MX", "preference": int(value[0]), "host": str(value[1])})
        elif kind in ("A", "AAAA", "PTR", "CNAME"):
            out.append({"type": kind, "value": str(value)})
        else:
            raise SystemExit(f"unexpected record type {kind!r}")
    if not has_txt:
        out.extend(spf)
    return out


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: spf_suite_json.py FILE.yml[.gz]")
    name = sys.argv[1]
    opener = gzip.open if name.endswith(".gz") else open
    with opener(name, "rb") as f:
        documents = list(yaml.safe_load_all(f))
    scenarios = []
    for doc in documents:
        zone = {}
        for owner, records in (doc.get("zonedata") or {}).items():
            zone.setdefault(owner.lower().rstrip("."), []).extend(entries(records or []))
        tests = []
        for test_id, t in doc["tests"].items():
            result = t["result"]
            tests.append({
                "id": test_id,
                "spec": str(t.get("spec", "")),
                "helo": str(t["helo"]),
                "host": str(t["host"]),
                "mailfrom": str(t["mailfrom"]),
                "result": [result] if isinstance(result, str) else list(result),
                "explanation": t.get("explanation"),
            })
        scenarios.append({"description": doc.get("description", ""), "zone": zone, "tests": tests})
    json.dump(scenarios, sys.stdout)


if __name__ == "__main__":
    main()
