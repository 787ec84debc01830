# Two commands do all the set-up on a fresh machine:
#   make demo   the main job on the embedded default (SQLite, in-process tasks)
#   make test   the test suite against the real PostgreSQL and Redis
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The test suite and the real processes use this; the demo deliberately does not.
PG_URL ?= postgres://postgres@127.0.0.1:5432/dunning
REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: demo simulate test lint format services web worker beat bench-ingest bench-recompute bench-dispatch bench-drift bench-simulate bench-e2e chaos clean

$(BIN)/python: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(BIN)/python

demo: $(BIN)/python
	env -u DATABASE_URL -u CELERY_BROKER_URL $(BIN)/python manage.py migrate --verbosity 0
	env -u DATABASE_URL -u CELERY_BROKER_URL LOG_LEVEL=WARNING $(BIN)/python manage.py demo

# The outcome report: legacy policy against this service on one simulated book.
simulate: $(BIN)/python
	env -u DATABASE_URL -u CELERY_BROKER_URL LOG_LEVEL=WARNING $(BIN)/python manage.py simulate --json simulation.json --html simulation.html

test: $(BIN)/python services
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run --settings=config.test_settings
	$(BIN)/pytest

services:
	scripts/services-up

lint: $(BIN)/python
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

format: $(BIN)/python
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# The real processes against PostgreSQL and Redis (third way to run the service).
web: $(BIN)/python services
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(BIN)/python manage.py migrate
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(BIN)/gunicorn config.wsgi -b 127.0.0.1:8000 -w 2

worker: $(BIN)/python services
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(BIN)/celery -A config worker -l info

beat: $(BIN)/python services
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(BIN)/celery -A config beat -l info

bench-ingest: $(BIN)/python services
	$(BIN)/python bench/ingest.py

bench-recompute: $(BIN)/python services
	$(BIN)/python bench/recompute.py

bench-dispatch: $(BIN)/python services
	$(BIN)/python bench/retry_dispatch.py

bench-drift: $(BIN)/python services
	$(BIN)/python bench/drift.py

# WORKERS=0,2 also runs each size sharded over 2 worker processes; BENCH_ARGS=--with-100k
bench-simulate: $(BIN)/python services
	$(BIN)/python bench/simulate.py --workers $(or $(WORKERS),0) $(BENCH_ARGS)

# Signed webhook in to decision applied on gunicorn, worker and beat; needs wrk and pgbench.
bench-e2e: $(BIN)/python services
	$(BIN)/python bench/e2e.py

# The fault suite: its own PostgreSQL and Redis, about 12 minutes; not part of `make test`.
chaos: $(BIN)/python
	env -u DATABASE_URL $(BIN)/python -u -m chaos.run

clean:
	rm -rf $(VENV) db.sqlite3
