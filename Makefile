# tern: two commands for a newcomer.
#   make run   install what is missing, build (release), start tern in development mode
#   make test  install what is missing, build with ASan+UBSan, run every test and a short fuzz run
SHELL := /bin/bash
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 20
# Every libFuzzer target (tests/fuzz/<name>_fuzz.cpp, corpus in tests/fuzz/corpus/<name>/);
# CMakeLists.txt's fuzz foreach names the same list.
FUZZ_TARGETS := smtp_command smtp_data maildirsize smtp_reply dns_rdata mta_sts spf_record dkim_tags dkim_canon mime access_rules config dmarc_record maildir_index pop3_command imap_command
PYTHON := /usr/bin/python3
# The throw-away servers of the tests, started before them and stopped when the recipe's shell
# exits: PostgreSQL (directory backend; connection string in TERN_TEST_POSTGRES) and unbound with
# the test DNS zones (resolver, relay; TERN_TEST_DNS=127.0.0.1@PORT and its trust anchor file
# TERN_TEST_DNS_ANCHOR).
PG_DIR := $(CURDIR)/build/pg
DNS_DIR := $(CURDIR)/build/testdns
WITH_POSTGRES = set -e; pg="$$($(CURDIR)/scripts/test-postgres.sh start $(PG_DIR))"; eval "$$pg"; \
	trap '$(CURDIR)/scripts/test-postgres.sh stop $(PG_DIR); $(CURDIR)/scripts/test-dns.sh stop $(DNS_DIR)' EXIT; \
	dns="$$($(CURDIR)/scripts/test-dns.sh start $(DNS_DIR))"; eval "$$dns"; \
	export TERN_TEST_POSTGRES TERN_TEST_DNS TERN_TEST_DNS_ANCHOR;

.PHONY: format all deps build build-asan build-fuzz run test unit integration fuzz fuzz-smoke soak bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@ninja -C build/release -j $(JOBS) tern

build-asan: deps
	@cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTERN_SANITIZE=ON >/dev/null
	@ninja -C build/asan -j $(JOBS)

build-fuzz: deps
	@CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_FUZZ=ON >/dev/null
	@ninja -C build/fuzz -j $(JOBS)

run: build
	./build/release/tern serve --dev

unit: build-asan
	$(WITH_POSTGRES) cd build/asan && ctest --output-on-failure -j $(JOBS)

# The integration suite runs twice: on the default SQLite account database, then with
# TERN_TEST_BACKEND=postgresql (each server on a fresh database of the test server), leaving out
# the modules that never open an account database (marked backend_independent). Both runs
# always happen; the recipe fails if either failed.
PYTEST = TERN_BIN=$(CURDIR)/build/asan/tern $(PYTHON) -m pytest -v -p no:cacheprovider
INTEGRATION_BOTH_BACKENDS = status=0; \
	echo "== integration tests, SQLite account database"; \
	$(PYTEST) tests/integration || status=1; \
	echo "== integration tests, PostgreSQL account database"; \
	TERN_TEST_BACKEND=postgresql $(PYTEST) -m "not backend_independent" tests/integration || status=1; \
	exit $$status

integration: build-asan
	$(WITH_POSTGRES) $(INTEGRATION_BOTH_BACKENDS)

# Each fuzz target runs for FUZZ_SECONDS over a copy of its kept corpus (new inputs are not
# written back, so `make test` leaves the tree clean); `make fuzz FUZZ_SECONDS=600` runs longer
# and keeps what it finds.
fuzz-smoke: build-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  work=$$(mktemp -d); cp tests/fuzz/corpus/$$t/* $$work/ 2>/dev/null || true; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	  ./build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$work 2>&1 | grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' ; \
	  status=$${PIPESTATUS[0]}; rm -rf $$work; [ $$status -eq 0 ] || exit $$status; \
	done

fuzz: build-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  ./build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) tests/fuzz/corpus/$$t || exit 1; \
	done

# The crash harness (tests/reliability/crash_harness.py) for SOAK_SECONDS against the release
# binary: SMTP traffic while tern's processes are killed; prints the totals, fails on any loss.
# (`make test` runs it for 45 s as tests/integration/test_crash_harness.py.)
SOAK_SECONDS ?= 1800
soak: build
	TERN_BIN=$(CURDIR)/build/release/tern $(PYTHON) tests/reliability/crash_harness.py --duration $(SOAK_SECONDS) --progress 60

test: build-asan build-fuzz
	$(WITH_POSTGRES) \
	(cd build/asan && ctest --output-on-failure -j $(JOBS)); \
	$(MAKE) --no-print-directory fuzz-smoke; \
	$(INTEGRATION_BOTH_BACKENDS)

clean:
	rm -rf build

# Postfix for smtp_accept's and end_to_end's smtp-source/smtp-sink, end_to_end's private Postfix
# instance, and directory's peer lookups (postmap with the
# sqlite map type from postfix-sqlite; without it directory.sh compares with hash: files only).
# Dovecot (dovecot-imapd) for imap_bench.py's private Dovecot instance (its own config file and
# directories; the system-wide Dovecot the package sets up is not used).
bench: build
	@sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; export DEBIAN_FRONTEND=noninteractive; \
	  if ! command -v smtp-source >/dev/null || ! postconf -m 2>/dev/null | grep -qx sqlite; then \
	    $$sudo apt-get install -y -qq postfix postfix-sqlite >/dev/null || \
	    { $$sudo apt-get update -qq && $$sudo apt-get install -y -qq postfix >/dev/null && \
	      { $$sudo apt-get install -y -qq postfix-sqlite >/dev/null || echo "postfix-sqlite not installable: bench/directory.sh compares with Postfix's hash: maps only"; }; }; \
	  fi; \
	  if [ ! -x /usr/lib/dovecot/imap ]; then \
	    $$sudo apt-get install -y -qq dovecot-imapd >/dev/null || \
	    { $$sudo apt-get update -qq && $$sudo apt-get install -y -qq dovecot-imapd >/dev/null; }; \
	  fi
	@ninja -C build/release -j $(JOBS) bench_directory
	@status=0; \
	  TERN_BIN=$(CURDIR)/build/release/tern bench/smtp_accept.sh || status=$$?; \
	  if [ "$$(id -u)" -eq 0 ]; then TERN_BIN=$(CURDIR)/build/release/tern bench/end_to_end.sh || status=$$?; \
	  else echo "bench/end_to_end.sh skipped: it runs as root (it starts a private Postfix master)"; fi; \
	  TERN_BIN=$(CURDIR)/build/release/tern BENCH_DIRECTORY_BIN=$(CURDIR)/build/release/bench_directory \
	    bench/directory.sh || status=$$?; \
	  if [ "$$(id -u)" -eq 0 ]; then TERN_BIN=$(CURDIR)/build/release/tern $(PYTHON) bench/imap_bench.py || status=$$?; \
	  else echo "bench/imap_bench.py skipped: it runs as root (it starts a private Dovecot master)"; fi; \
	  exit $$status

# clang-format over every C++ source (style in .clang-format).
format:
	clang-format -i src/*/*.cpp src/*/*.h tests/unit/*.cpp tests/fuzz/*.cpp bench/*.cpp
