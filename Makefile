# The two commands a new machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-ceph lint bench bench-supply image system-deps ceph-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cargohold serve

system-deps:
	./scripts/system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (real engines, kill -9 loops, benchmark runs).
test-fast: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# The slow lane, not in `make test` or CI: the S3 tests (the contract suite's S3 cases, the
# registry on S3, S3 faults, the fleet) against Ceph's radosgw as a real S3 instead of moto.
ceph-deps:
	./scripts/ceph-deps.sh

CEPH_TESTS := -k "s3 or fleet" tests/contract tests/test_s3_serve.py tests/test_s3_faults.py tests/test_fleet.py

test-ceph: $(STAMP) system-deps ceph-deps
	CARGOHOLD_TEST_S3=radosgw $(BIN)/pytest $(CEPH_TESTS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The container image (deploy/Dockerfile), built offline from wheels made here: IMAGE=cargohold:dev, BASE=...
image: $(STAMP)
	PYTHON=$(BIN)/python ./deploy/build-image.sh

bench: $(STAMP) system-deps
	$(BIN)/python bench/registry_bench.py $(BENCH_ARGS)

# SBOM + scan of a 1,000-package Debian image against 100,000 advisories, import rate, memory on a 1 GiB layer.
bench-supply: $(STAMP) system-deps
	$(BIN)/python bench/supply_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache
