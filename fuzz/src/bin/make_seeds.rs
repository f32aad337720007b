//! Writes the seed corpora: `make_seeds <dir>` fills `<dir>/<target>/<seed>`.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let targets = [
        ("record_decode", annal_fuzz::seeds::records()),
        ("consensus_message", annal_fuzz::seeds::consensus_messages()),
        ("bundle_verify", annal_fuzz::seeds::bundles()),
        ("note_parse", annal_fuzz::seeds::notes()),
        ("api_body", annal_fuzz::seeds::api_bodies()),
    ];
    for (target, seeds) in targets {
        let out = dir.join(target);
        std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        for (name, bytes) in &seeds {
            let path = out.join(name);
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        println!("{target}: {} seeds in {}", seeds.len(), out.display());
    }
}
