//! The validator process: libp2p gossip, mempool, block sync, consensus execution, HTTP API and metrics.
//!
//! Built so far: [`net`], the networking layer (issue 5). The mempool, sync,
//! consensus wiring and HTTP API come next, on top of [`net::NetworkHandle`].

pub mod net;
