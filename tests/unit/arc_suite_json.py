#!/usr/bin/python3
"""Prints an ARC conformance suite of ValiMail's arc_test_suite YAML format
(../shared/testdata/arc/arc-draft-validation-tests.yml, arc-draft-sign-tests.yml) as JSON, for
tests/unit/arc_test.cpp, which has no YAML reader.

    /usr/bin/python3 tests/unit/arc_suite_json.py FILE.yml

Output: a list of scenarios, each
    {"description": str,
     "txt_records": {name: text},           the DKIM key records, names lowercased, no final dot
     "domain": str, "sel": str, "privatekey": str,          signing suites only
     "tests": [{"id": str, ...}]}           in file order
Validation tests carry "description", "spec", "message" and "cv" ("Pass", "Fail", "None", or ""
where the suite gives an empty expectation); signing tests "description", "spec", "message",
"t", "sig_headers", "srv_id", "AS", "AMS" and "AAR" (the last three "" when no ARC set is to be
added). Every value is a string as YAML holds it (t as its decimal text); the suite's spellings
"txt-records"/"txt_records" and "sig-headers"/"srv-id" are normalised. Duplicate test names in a
scenario keep their last definition, as PyYAML (and so the suite's own driver) reads them.
"""
import json
import sys

import yaml


def text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        raise SystemExit(f"unexpected boolean {value!r}")
    return str(value)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: arc_suite_json.py FILE.yml")
    with open(sys.argv[1], "rb") as f:
        documents = [doc for doc in yaml.safe_load_all(f) if doc]
    scenarios = []
    for doc in documents:
        records = doc.get("txt-records", doc.get("txt_records")) or {}
        scenario = {
            "description": text(doc.get("description")),
            "txt_records": {name.lower().rstrip("."): text(value) for name, value in records.items()},
            "tests": [],
        }
        for key in ("domain", "sel", "privatekey"):
            if key in doc:
                scenario[key] = text(doc[key])
        for test_id, t in (doc.get("tests") or {}).items():
            test = {"id": text(test_id)}
            for key, value in t.items():
                test[key.replace("-", "_")] = text(value)
            if "message" not in test:
                raise SystemExit(f"test {test_id} has no message")
            scenario["tests"].append(test)
        scenarios.append(scenario)
    json.dump(scenarios, sys.stdout)


if __name__ == "__main__":
    main()
