# Annal: the two commands a newcomer needs.
#   make devnet   install build prerequisites, build, start a local 4-validator network
#   make test     install build prerequisites, run the whole test suite
#
# Build output is reused across runs and clones: CARGO_TARGET_DIR defaults to a
# fixed folder outside the clone. Never `cargo clean` it: RocksDB's C++ takes
# 12–25 minutes to build cold on a 2-core machine.

export CARGO_TARGET_DIR ?= /var/tmp/annal-target
CARGO ?= cargo
# How many simulator seeds the consensus tests run (CI default; raise for long runs).
export SIM_SEEDS ?=

.PHONY: test devnet build prereqs fmt clippy bench-ledger

prereqs:
	@./scripts/prereqs.sh

build: prereqs
	$(CARGO) build --all-targets

test: prereqs
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	$(CARGO) test --all-features --workspace -- --test-threads=2

# The validator node (and with it `annal devnet`) is not built yet: say so plainly.
devnet: build
	@if $(CARGO_TARGET_DIR)/debug/annal devnet --help >/dev/null 2>&1; then \
		$(CARGO_TARGET_DIR)/debug/annal devnet; \
	else \
		echo "make devnet: the validator node is not built yet (issue 5); the ledger, proofs and CLI are:"; \
		echo "  $(CARGO_TARGET_DIR)/debug/annal --help"; \
		exit 1; \
	fi

fmt:
	$(CARGO) fmt --all

# Benchmarks run in the same profile as the tests (see Cargo.toml).
bench-ledger: prereqs
	$(CARGO) run -p annal-cli -- bench ledger
