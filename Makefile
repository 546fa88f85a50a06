# Two commands matter on a fresh clone: `make demo` and `make test` (each sets up .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.medlatent-installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= all
# The demo runs in its own folder, a git repository of its own: publishing commits DVC pointers
# and tags versions there, never in this clone.
DEMO_DIR ?= demo-run

.PHONY: demo test bench bench-gpu gpu-check lint publish dvc-setup clean-demo

# The venv is rebuilt only when the dependency pins change.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	# the authors' MedVAE code is the oracle of the released-weights tests; its own pins clash with ours
	$(VENV)/bin/pip install --quiet --no-deps medvae==0.1.7
	touch $@

demo: $(STAMP)
	@test -d $(DEMO_DIR)/.git || { git init -q $(DEMO_DIR) \
	  && git -C $(DEMO_DIR) config user.name "MedLatent demo" \
	  && git -C $(DEMO_DIR) config user.email demo@medlatent.invalid \
	  && git -C $(DEMO_DIR) commit -q --allow-empty -m "MedLatent demo: latent dataset registry"; }
	@medlatent unlock-stale $(DEMO_DIR)  # after a hard kill: continue where the killed run stopped
	snakemake --profile workflow/profiles/demo --cores $(CORES) -d $(DEMO_DIR) all publish_latents
	@echo
	@echo "Demo finished (synthetic data, demo networks). Everything is under $(DEMO_DIR)/:"
	@echo "  report:           $(DEMO_DIR)/results/report/summary.md (tables: results/tables/, figures: results/figures/)"
	@echo "  latent datasets:  $(DEMO_DIR)/data/latents/<model>/<source>/ (index.json, README.md, *.tar)"
	@echo "  published:        $(DEMO_DIR)/results/publish/receipt.json; DVC remote $(DEMO_DIR)/.dvc-remote-demo; git tag -l in $(DEMO_DIR)"
	@echo "  data stages:      $(DEMO_DIR)/data/{raw,curated,normalized}/; logs: $(DEMO_DIR)/logs/; benchmarks: $(DEMO_DIR)/benchmarks/"
	@echo "  HTML report:      snakemake --profile workflow/profiles/demo -d $(DEMO_DIR) --report report.html  (writes $(DEMO_DIR)/report.html)"

# pytest exits 5 when it collects no test: that is reported, not hidden, and not a failure of CI.
# Two pytest workers, one test file each at a time (module fixtures run once): the workflow tests
# wait on subprocesses much of the time, so two workers keep the 2 CI cores busy.
TEST_WORKERS ?= 2
test: $(STAMP)
	@set +e; pytest -q -rs -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; exit 0; fi; exit $$rc

bench: $(STAMP)
	python benchmarks/bench.py --out bench-results/bench.json

# Paper-scale figures on one GPU (< 5 min); on a CPU: make bench-gpu BENCH_GPU_ARGS="--device cpu --quick"
bench-gpu: $(STAMP)
	python benchmarks/bench_gpu.py --out bench-results/bench-gpu.json $(BENCH_GPU_ARGS)

# The one device check (< 8 min on one GPU): bench-gpu at bf16 and fp32, real-size training, the demo's
# extraction on GPU vs CPU; everything under gpu-check/. On a CPU: make gpu-check GPU_CHECK_ARGS="--quick"
gpu-check: $(STAMP)
	python benchmarks/gpu_check.py --out gpu-check $(GPU_CHECK_ARGS)

# Style and workflow checks (CI runs them before the tests): ruff (pyflakes, pycodestyle with
# 120 columns, import order) and its formatter, snakefmt on the rule files, snakemake --lint.
lint: $(STAMP)
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks
	snakefmt --check Snakefile workflow
	snakemake --lint

# Real data: set up DVC in this repository (idempotent), then push every shareable latent dataset.
dvc-setup: $(STAMP)
	medlatent dvc-setup --configfile config.yaml

publish: $(STAMP)
	snakemake --cores 1 publish_latents

clean-demo:
	rm -rf $(DEMO_DIR)
