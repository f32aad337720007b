//! C2SP signed notes, checkpoints and verifier keys from text
//! (`SignedNote::parse`, `Checkpoint::parse`, `VerifierKey::parse`), each
//! round-tripped through its writer, and a parsed note verified against the
//! verifier keys of `genesis/example.json` and of the fixture genesis (as a
//! note and as a validator set's checkpoint).
#![no_main]

use std::sync::LazyLock;

use annal_fuzz::{EXAMPLE, FIXTURE};
use annal_ledger::block::ValidatorSet;
use annal_ledger::note::{Checkpoint, SignedNote, VerifierKey};
use libfuzzer_sys::fuzz_target;

static SETS: LazyLock<[(String, ValidatorSet, Vec<VerifierKey>); 2]> = LazyLock::new(|| {
    [&*EXAMPLE, &*FIXTURE].map(|g| {
        let set = g.validator_set();
        let keys = set.verifier_keys();
        (g.chain_id.clone(), set, keys)
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(note) = SignedNote::parse(text) {
        assert_eq!(note.to_string(), text, "a parsed note writes back other text");
        for (chain_id, set, keys) in SETS.iter() {
            let _ = note.verify(keys);
            let _ = set.verify_checkpoint(chain_id, &note);
        }
    }
    if let Ok(checkpoint) = Checkpoint::parse(text) {
        assert_eq!(checkpoint.to_text(), text, "a parsed checkpoint writes back other text");
    }
    if let Ok(key) = VerifierKey::parse(text) {
        assert_eq!(key.to_string(), text, "a parsed verifier key writes back other text");
    }
});
