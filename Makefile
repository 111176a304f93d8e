# saas-llm — the two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8003
MOCK_PORT ?= 8100

.PHONY: run test fuzz lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

## make run: venv, install, migrate, seed the demo, serve on :$(PORT) (DEBUG=1)
run: $(VENV)/.installed
	DEBUG=1 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 $(BIN)/python manage.py seed_demo --mock-port $(MOCK_PORT)
	@# The demo alias is served by the local mock upstream; it stops with the server.
	$(BIN)/python manage.py mock_llm_server --port $(MOCK_PORT) & MOCK_PID=$$!; \
	trap 'kill $$MOCK_PID 2>/dev/null' EXIT INT TERM; \
	DEBUG=1 SAAS_LLM_WEBHOOK_ALLOW_PRIVATE=1 $(BIN)/uvicorn saas_llm.asgi:application --host 127.0.0.1 --port $(PORT)

## make test: install dev deps and run the whole suite
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make fuzz: Schemathesis against /openapi.json on a live server, with an admin and a team key
fuzz: $(VENV)/.installed-dev
	SAAS_LLM_FUZZ_EXAMPLES=$${SAAS_LLM_FUZZ_EXAMPLES:-25} $(BIN)/python -m pytest tests/test_schemathesis.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) db.sqlite3 .demo-keys.json staticfiles
