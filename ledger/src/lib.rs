//! Records, blocks, canonical encoding, the RFC 6962 log, proofs and their offline verification, record state, and the RocksDB store.

pub mod merkle;
