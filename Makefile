# Two commands matter on a fresh clone: `make demo` and `make test` (each sets up .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.medlatent-installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= all

.PHONY: demo test bench lint clean-demo

# The venv is rebuilt only when the dependency pins change.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	snakemake --profile workflow/profiles/demo --cores $(CORES)
	@echo
	@echo "Demo finished. Outputs: data/raw, data/curated, data/normalized (per source);"
	@echo "curation reports: data/curated/*/report.json; logs: logs/; benchmarks: benchmarks/."

# pytest exits 5 when it collects no test: that is reported, not hidden, and not a failure of CI.
test: $(STAMP)
	@set +e; pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; exit 0; fi; exit $$rc

bench: $(STAMP)
	python -m medlatent.bench --out bench-results/bench.json

lint: $(STAMP)
	snakemake --lint

clean-demo:
	rm -rf data results logs benchmarks .snakemake
