//! The library half of `annal`: what the binary and the cross-crate tests
//! (tests/) share — the node API client, genesis and devnet set-up.

use anyhow::{bail, Context, Result};

#[doc(hidden)]
pub mod canned;
pub mod client;
pub mod devnet;
pub mod genesis_cmd;

/// Refuses to overwrite a file.
pub fn ensure_absent(path: &std::path::Path) -> Result<()> {
    if path.exists() {
        bail!("{} already exists; refusing to overwrite it", path.display());
    }
    Ok(())
}

/// Creates a folder (and its parents) for key files, readable by its owner only.
pub fn create_private_dir(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}
