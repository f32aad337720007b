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

# Same features as the tests, so `make devnet` and `make test` share one build.
build: prereqs
	$(CARGO) build --workspace --all-targets --all-features

test: prereqs
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	$(CARGO) test --all-features --workspace -- --test-threads=2

# Four validators on 127.0.0.1 in ./devnet (kept between runs; delete it to start over).
devnet: build
	$(CARGO_TARGET_DIR)/debug/annal devnet --validators 4 --dir devnet

fmt:
	$(CARGO) fmt --all

# Benchmarks run in the same profile as the tests (see Cargo.toml).
bench-ledger: prereqs
	$(CARGO) run -p annal-cli -- bench ledger
