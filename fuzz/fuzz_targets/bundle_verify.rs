//! Proof bundles and consistency proofs as an auditor receives them: JSON
//! text (`Bundle::from_json`, `Consistency::from_json`), then the offline
//! checks (`proof::verify`, `proof::verify_consistency`) against
//! `genesis/example.json` and against the fixture genesis whose keys sign the
//! seed bundles. Nothing may panic; a parsed bundle survives a JSON round trip.
#![no_main]

use annal_fuzz::seeds::DOCUMENT;
use annal_fuzz::{EXAMPLE, FIXTURE};
use annal_ledger::proof::{self, Bundle, Consistency};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bundle) = Bundle::from_json(text) {
        let back = Bundle::from_json(&bundle.to_json()).expect("a parsed bundle's JSON parses");
        assert_eq!(back, bundle, "bundle JSON round trip");
        for genesis in [&*EXAMPLE, &*FIXTURE] {
            let _ = proof::verify(&bundle, genesis, None);
            let _ = proof::verify(&bundle, genesis, Some(DOCUMENT));
        }
    }
    if let Ok(consistency) = Consistency::from_json(text) {
        let back = Consistency::from_json(&consistency.to_json()).expect("a parsed consistency proof's JSON parses");
        assert_eq!(back, consistency, "consistency JSON round trip");
        for genesis in [&*EXAMPLE, &*FIXTURE] {
            let _ = proof::verify_consistency(&consistency, genesis, None);
            let _ = proof::verify_consistency(&consistency, genesis, Some(&consistency.old.checkpoint));
        }
    }
});
