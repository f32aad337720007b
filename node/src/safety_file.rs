//! The consensus safety state on disk.
//!
//! A validator rewrites its safety state before every vote leaves it (DESIGN.md;
//! `Output::PersistSafety`), a few times per block. Writing a new file and
//! renaming it over the old one cost an inode and two fsyncs (the file's and
//! its folder's) each time: 2.7 % of a validator at load (docs/BENCHMARKS.md,
//! session 12). So the file holds two slots, and each write goes in place into
//! the slot the previous write did not use, followed by one `fdatasync`:
//!
//! ```text
//! slot 0 at byte 0, slot 1 at byte SLOT_BYTES, each:
//!   magic "annalsf1" | seq u64 LE | len u32 LE | SHA-256(seq LE || len LE || state) | state (len bytes)
//! ```
//!
//! Write `seq` goes to slot `seq % 2`; reading takes the valid slot with the
//! higher `seq`. A write torn by a crash leaves the other slot whole, and that
//! one holds the state of before the torn write, whose vote never left. The
//! first write of a process makes a new file (written, synced, renamed over the
//! old, folder synced), so a file of the older one-state format, or none, is
//! replaced whole; reading still accepts the older format.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use annal_consensus::SafetyState;
use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

/// Room for one encoded state: 112 bytes and a finalization certificate of up to
/// `VALIDATORS_MAX` (1,024) signatures, 65.7 KB.
pub const SLOT_BYTES: usize = 72 * 1024;
const MAGIC: &[u8; 8] = b"annalsf1";
const HEADER_BYTES: usize = 8 + 8 + 4 + 32;

/// The safety state file of one epoch, open for in-place writes once written.
pub struct SafetyFile {
    path: PathBuf,
    /// The file and the `seq` of its last write, once this process wrote it.
    open: Option<(File, u64)>,
}

impl SafetyFile {
    pub fn new(path: PathBuf) -> SafetyFile {
        SafetyFile { path, open: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state last written, or the default state if there is no file.
    pub fn read(&self) -> Result<SafetyState> {
        match std::fs::read(&self.path) {
            Ok(bytes) => decode_file(&bytes).with_context(|| format!("reading {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SafetyState::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Writes `state` durably: when this returns, a crash at any point reads back `state`.
    pub fn write(&mut self, state: &SafetyState) -> Result<()> {
        let encoded = state.encode();
        if encoded.len() > SLOT_BYTES - HEADER_BYTES {
            bail!("a safety state of {} bytes does not fit a slot of {SLOT_BYTES}", encoded.len());
        }
        match &mut self.open {
            Some((file, seq)) => {
                let next = *seq + 1;
                let at = (next % 2) * SLOT_BYTES as u64;
                file.write_all_at(&slot(next, &encoded), at)
                    .and_then(|()| file.sync_data())
                    .with_context(|| format!("writing {}", self.path.display()))?;
                *seq = next;
            }
            None => {
                let dir = self.path.parent().context("the safety file has no folder")?;
                let tmp = self.path.with_extension("tmp");
                crate::app::write_synced(&tmp, &[&slot(0, &encoded)])?;
                std::fs::rename(&tmp, &self.path).context("replacing the safety state")?;
                crate::app::sync_dir(dir)?;
                let file = File::options()
                    .read(true)
                    .write(true)
                    .open(&self.path)
                    .with_context(|| format!("opening {}", self.path.display()))?;
                self.open = Some((file, 0));
            }
        }
        Ok(())
    }
}

fn slot(seq: u64, state: &[u8]) -> Vec<u8> {
    let mut w = Vec::with_capacity(HEADER_BYTES + state.len());
    w.extend_from_slice(MAGIC);
    w.extend_from_slice(&seq.to_le_bytes());
    w.extend_from_slice(&(state.len() as u32).to_le_bytes());
    w.extend_from_slice(&checksum(seq, state));
    w.extend_from_slice(state);
    w
}

fn checksum(seq: u64, state: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seq.to_le_bytes());
    h.update((state.len() as u32).to_le_bytes());
    h.update(state);
    h.finalize().into()
}

/// The slot's `seq` and state bytes, if it holds a whole write.
fn read_slot(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let header = bytes.get(..HEADER_BYTES)?;
    if &header[..8] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    let state = bytes.get(HEADER_BYTES..HEADER_BYTES.checked_add(len)?)?;
    (checksum(seq, state)[..] == header[20..52]).then_some((seq, state))
}

fn decode_file(bytes: &[u8]) -> Result<SafetyState> {
    // The older format is one encoded state, shorter than a slot, not starting with the magic.
    if !bytes.starts_with(MAGIC) && bytes.len() <= SLOT_BYTES {
        return SafetyState::decode(bytes).map_err(|e| anyhow::anyhow!("{e}"));
    }
    let first = read_slot(&bytes[..bytes.len().min(SLOT_BYTES)]);
    let second = bytes.get(SLOT_BYTES..).and_then(read_slot);
    let Some((_, state)) = [first, second].into_iter().flatten().max_by_key(|(seq, _)| *seq) else {
        bail!("neither of its two slots holds a whole safety state (the file is damaged)");
    };
    SafetyState::decode(state).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use annal_consensus::{Height, View};

    fn state(view: u64) -> SafetyState {
        SafetyState {
            proposed: View(view),
            notarized: View(view),
            notarized_block: (Height(view), [view as u8; 32]),
            ..SafetyState::default()
        }
    }

    /// Goal: each write reads back, across reopening, alternating slots in place.
    #[test]
    fn writes_read_back_in_order() {
        let path = crate::test_dir("safety-order").join("safety");
        let mut f = SafetyFile::new(path.clone());
        assert_eq!(f.read().unwrap(), SafetyState::default());
        for view in 1..=5 {
            f.write(&state(view)).unwrap();
            assert_eq!(SafetyFile::new(path.clone()).read().unwrap(), state(view));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, SLOT_BYTES + HEADER_BYTES + 112);
        // A new process starts a new file from its first write.
        let mut again = SafetyFile::new(path.clone());
        again.write(&state(9)).unwrap();
        assert_eq!(again.read().unwrap(), state(9));
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, HEADER_BYTES + 112);
    }

    /// Goal: a write torn anywhere in its slot reads back as the write before it,
    /// and a file with both slots damaged is an error naming the damage.
    #[test]
    fn a_torn_write_falls_back_to_the_write_before() {
        let path = crate::test_dir("safety-torn").join("safety");
        let mut f = SafetyFile::new(path.clone());
        for view in 1..=3 {
            f.write(&state(view)).unwrap();
        }
        // The last write (seq 2) went to slot 0; slot 1 holds view 2.
        let whole = std::fs::read(&path).unwrap();
        for at in 0..HEADER_BYTES + 112 {
            let mut torn = whole.clone();
            torn[at] ^= 0x40;
            assert_eq!(decode_file(&torn).unwrap(), state(2), "byte {at} of slot 0 damaged");
        }
        let mut both = whole.clone();
        both[3] ^= 1;
        both[SLOT_BYTES + 60] ^= 1;
        let e = decode_file(&both).unwrap_err().to_string();
        assert!(e.contains("neither of its two slots"), "{e}");
    }

    /// Goal: a file in the older format (one encoded state) still reads.
    #[test]
    fn the_older_format_reads() {
        let s = state(7);
        assert_eq!(decode_file(&s.encode()).unwrap(), s);
        assert!(decode_file(&s.encode()[..50]).is_err());
    }
}
