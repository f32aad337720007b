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

.PHONY: test devnet build prereqs fmt clippy bench-ledger fuzz

prereqs:
	@./scripts/prereqs.sh

# Same features as the tests, so `make devnet` and `make test` share one build.
build: prereqs
	$(CARGO) build --workspace --all-targets --all-features

test: prereqs
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	$(CARGO) test --all-features --workspace -- --test-threads=2
	# The offline verifier's build: the ledger without RocksDB (no C++ toolchain needed).
	$(CARGO) clippy -p annal-ledger --no-default-features --all-targets -- -D warnings
	$(CARGO) test -p annal-ledger --no-default-features
	# The fuzz crate (its own workspace, no RocksDB) must keep compiling against the crates it fuzzes.
	cd fuzz && $(CARGO) fmt -- --check && CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) $(CARGO) check --locked --bins

# Four validators on 127.0.0.1 in ./devnet (kept between runs; delete it to start over).
devnet: build
	$(CARGO_TARGET_DIR)/debug/annal devnet --validators 4 --dir devnet

fmt:
	$(CARGO) fmt --all

# Benchmarks run in the same profile as the tests (see Cargo.toml).
bench-ledger: prereqs
	$(CARGO) run -p annal-cli -- bench ledger

# Fuzzing (docs/SECURITY.md): every target for FUZZ_SECONDS, one after another,
# at the lowest CPU priority; stops at the first finding (saved in
# fuzz/artifacts/<target>/). Not part of `make test`. Stable Rust:
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags (AddressSanitizer,
# coverage). The fuzz crate has its own workspace and target folder and never
# builds RocksDB. New corpus entries go to FUZZ_CORPUS, outside the clone;
# fuzz/corpus/<target> holds the committed seeds and is only read.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= record_decode consensus_message bundle_verify note_parse api_body
FUZZ_TARGET_DIR ?= /var/tmp/annal-fuzz-target
FUZZ_CORPUS ?= /var/tmp/annal-fuzz-corpus

fuzz:
	@command -v cargo-fuzz >/dev/null || nice -n 19 $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_CORPUS)/$$t && \
	  RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) nice -n 19 $(CARGO) fuzz run $$t \
	    $(FUZZ_CORPUS)/$$t $(CURDIR)/fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	    $$(test -f dict/$$t.dict && echo -dict=$(CURDIR)/fuzz/dict/$$t.dict) || exit 1; \
	done
