# Every target works on a fresh clone with only Python 3.11+ and make: the venv is built on demand
# from the hash-locked requirements.lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The browser the page tests drive (tests/e2e/test_web_page.py reads the same variable).
CHROMIUM ?= /usr/bin/chromium
# The load balancer in front of two web processes (tests/e2e/test_web_haproxy.py, demo/haproxy.py).
HAPROXY := /usr/sbin/haproxy

.DEFAULT_GOAL := help
.PHONY: help demo demo-cluster test test-unit check lint types lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	touch $(STAMP)

# Playwright drives Debian's Chromium rather than downloading its own build. Installed once, when
# missing; on a fresh image apt has no package lists yet, hence the update on a failed install.
$(CHROMIUM):
	@echo "$@ is missing: the browser tests (tests/e2e/test_web_page.py) need Chromium;" \
		"installing Debian's chromium package"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@test -x $@ || { echo "still no browser at $@: set CHROMIUM to one"; exit 1; }

# HAProxy, Debian's package, balances two web processes with no session affinity (issue 17).
$(HAPROXY):
	@echo "$@ is missing: the scale-out tests (tests/e2e/test_web_haproxy.py) need HAProxy;" \
		"installing Debian's haproxy package"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy; }
	@test -x $@ || { echo "still no haproxy at $@"; exit 1; }

demo: $(STAMP)  ## set up, then run the whole system (simulator and embedded Redis unless configured otherwise)
	$(BIN)/python -m demo

demo-cluster: $(STAMP) $(HAPROXY)  ## the scaled-out layout: Redis Cluster, two processes of each role, HAProxy
	$(BIN)/python -m demo --cluster

# Two pytest-xdist workers: most tests wait on processes, the clock or the network, so two halve
# the wall time on a 2-core machine. What must not overlap runs on one worker, one test after the
# other (tests/conftest.py GROUPS). `pytest` alone runs serially.
test: $(STAMP) $(CHROMIUM) $(HAPROXY)  ## set up, then run the whole test suite (starts its own redis-server)
	$(BIN)/python -m pytest -n 2

test-unit: $(STAMP)  ## run only the unit tests (no network, no Redis)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)  ## mypy strict on the product code
	$(BIN)/mypy

check: lint types test  ## every gate: lint, types, tests (CI runs `make test`)

# requirements.lock: everything a developer installs (runtime, demo, dev tools), hash-pinned.
# requirements.txt: what a deploy installs (Heroku's buildpack reads it), the runtime subset of the
# same versions, without this machine's index lines.
lock:  ## re-resolve requirements.lock and requirements.txt from pyproject.toml (needs the network)
	$(PYTHON) -m venv .lockvenv && .lockvenv/bin/pip install --quiet pip-tools
	.lockvenv/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--extra dev --extra demo -o requirements.lock pyproject.toml
	.lockvenv/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links -c requirements.lock -o requirements.txt pyproject.toml
	rm -rf .lockvenv

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
