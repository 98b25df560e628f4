# Two entry points: `make demo` and `make test`. Both create .venv with the pinned versions.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick lint bench bench-all clean chromium java kafka-jars kafka

# Headless Chromium renders the HTML report in tests/integration/test_report.py. Idempotent:
# installs the Debian package only when no chromium is on PATH (root, or sudo when present).
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/decision-audit demo --events $${EVENTS:-10000}

test: $(STAMP) chromium kafka-jars
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

test-quick: $(STAMP) chromium kafka-jars
	$(BIN)/pytest -q -m "not slow and not faults"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium)

# Apache Kafka, the broker the integration and fault suites run on (tests/conftest.py): its
# jars come from Maven Central into .decision-audit/kafka/ (DECISION_AUDIT_KAFKA_CACHE); the
# fetch is idempotent. Java 17 and Maven are Debian's packages when missing, like Chromium.
java:
	@(command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1) || \
		($(SUDO) apt-get update && \
		 $(SUDO) apt-get install -y --no-install-recommends openjdk-17-jre-headless maven)

kafka-jars: $(STAMP) java
	@$(BIN)/python -m decision_audit.devtools.kafka_broker fetch >/dev/null

# One Apache Kafka node (KRaft broker+controller) in the foreground: PORT=9092, Ctrl-C stops it.
kafka: kafka-jars
	$(BIN)/python -m decision_audit.devtools.kafka_broker run --port $${PORT:-9092}

bench: $(STAMP)
	$(BIN)/python -m bench

# Every benchmark in one run (~35 min here): both brokers, verify and lookups at 10M events.
bench-all: $(STAMP) kafka-jars
	$(BIN)/python -m bench.all

clean:
	rm -rf $(VENV) .decision-audit .pytest_cache .mypy_cache .ruff_cache
