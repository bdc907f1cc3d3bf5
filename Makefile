# The two commands: `make run` (the system, with an embedded server) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)

.PHONY: install run demo test test-fast lint format bench bench-learning faults soak docs replay export dead-letters clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

run: install  ## the four services and an embedded Valkey server; Ctrl-C stops all
	$(PY) -m tools.supervisor $(ARGS)

demo: install  ## a realistic scenario through the public contract
	$(PY) -m tools.demo

test: install  ## the whole suite against a real server
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict shared/domain shared/prompt shared/taste

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install  ## throughput and resolver latency beside raw baselines
	$(PY) -m bench.pipeline

bench-learning: install  ## learning curves of the taste learners against an oracle
	$(PY) -m bench.learning

faults: install  ## kill -9 services and the server under load; compare live and replayed models
	$(PY) -m bench.faults

replay: install  ## rebuild every read model from the log into a fresh generation, verify, switch
	$(PY) -m tools.replay rebuild --verify --switch

export: install  ## the whole event log to data/log.jsonl (restore with: python -m tools.replay import FILE)
	$(PY) -m tools.replay export data/log.jsonl

dead-letters: install  ## every dead letter with its reason (redrive: python -m tools.redrive redrive --code CODE)
	$(PY) -m tools.redrive list

soak: install  ## a long run at constant membership: memory per member and per event stay flat
	$(PY) -m bench.soak $(ARGS)

docs: install  ## AsyncAPI documents of the four services into docs/asyncapi
	$(VENV)/bin/faststream docs gen tools.contract:app --out docs/asyncapi.json

clean:
	rm -rf $(VENV) data out .pytest_cache .mypy_cache .ruff_cache
