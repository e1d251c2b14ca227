PYTHON ?= python3
# The CPU build of torch lies on disk on the project's machines; a GPU box keeps the torch it has.
TORCH_CPU ?= torch==2.13.0

.PHONY: install test verify bench clean

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_CPU)
	$(PYTHON) -m pip install -q -e '.[dev]'

test: install
	$(PYTHON) -m pytest -q

# Every backend this machine has: cuda with a GPU, otherwise the CPU backends (meta, fake, cpu).
# Writes reports/<hardware>/; an interrupted run resumes from the JSONL it left there.
# Without a GPU it ends with the CPU ground-truth sweep (22 runs, under a minute on 2 cores; the whole of `make verify` about 3 minutes): reports/cpu/results.json.
verify: install
	$(PYTHON) -m verify report

bench: install
	$(PYTHON) -m verify.bench

clean:
	rm -rf build *.egg-info .pytest_cache
