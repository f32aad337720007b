//! Consensus messages from gossip bytes (`Message::decode`, default limits):
//! whatever decodes must encode back to exactly the input, and the signature
//! checks a node runs next (`verify_vote`, `Certificate::verify`, the block
//! hash) take it against a fixed four-validator set without panicking.
#![no_main]

use annal_consensus::{verify_vote, Ed25519Verifier, Limits, Message};
use annal_fuzz::{CONSENSUS_CHAIN, CONSENSUS_SET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data, &Limits::default()) else {
        return;
    };
    assert_eq!(message.encode(), data, "a decoded message encodes to other bytes than its input");
    match &message {
        Message::Vote(vote) => {
            let _ = verify_vote(vote, &CONSENSUS_CHAIN, &CONSENSUS_SET, &Ed25519Verifier);
        }
        Message::Certificate(cert) => {
            let _ = cert.signer_indices();
            let _ = cert.verify(&CONSENSUS_CHAIN, &CONSENSUS_SET, &Ed25519Verifier);
        }
        Message::Propose(p) => {
            let _ = p.block.hash(&CONSENSUS_CHAIN);
        }
        Message::BlockResponse(b) => {
            let _ = b.hash(&CONSENSUS_CHAIN);
        }
        Message::BlockRequest(_) => {}
    }
});
