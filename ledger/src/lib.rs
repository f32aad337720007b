//! Records, blocks, canonical encoding, the RFC 6962 log, proofs and their offline verification, record state, and the RocksDB store.
//!
//! Read in this order: `record` (what is signed), `codec` (how it is encoded),
//! `merkle` (the global log), `state` (the rules a record must pass), `exec`
//! (a block's records in, state changes and log nodes out), `store` (one
//! RocksDB write batch per block) and `segments` (the records' own files).

pub mod block;
pub mod codec;
pub mod error;
pub mod exec;
pub mod genesis;
pub mod gov;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod record;
pub mod record_ref;
#[cfg(feature = "store")]
pub mod segments;
pub mod state;
pub mod state_tree;
#[cfg(feature = "store")]
pub mod store;
pub mod submission;

pub use error::Error;
