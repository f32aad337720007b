//! The validator process: libp2p gossip, mempool, block sync, consensus execution, HTTP API and metrics.
//!
//! Not yet built: the node arrives with issue 5 ("Validator node and devnet").
