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

/// Reads at most `max` bytes of the file at `path`; a longer one is an error
/// (`InvalidData`, naming the limit). Bounded as it reads, not by the size the
/// file states: a pipe (`<(curl …)`) states none, and would be read whole.
pub fn read_file_max(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?.take(max.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("over the limit of {max} bytes")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// Goal: a file of exactly the limit is read; one byte more is refused naming the limit,
    /// also from a pipe, which states no size (read whole before this was bounded as it read).
    #[test]
    fn files_and_pipes_past_the_limit_are_refused() {
        let dir = std::env::temp_dir().join(format!("annal-read-max-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, [1u8; 10]).unwrap();
        assert_eq!(super::read_file_max(&file, 10).unwrap().len(), 10);
        let e = super::read_file_max(&file, 9).unwrap_err();
        assert_eq!(e.to_string(), "over the limit of 9 bytes");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let writer = {
            let fifo = fifo.clone();
            // Ends when the reader closes its end (a broken pipe) or after 1 MB.
            std::thread::spawn(move || {
                use std::io::Write;
                let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
                for _ in 0..1024 {
                    if pipe.write_all(&[2u8; 1024]).is_err() {
                        break;
                    }
                }
            })
        };
        let e = super::read_file_max(&fifo, 4096).unwrap_err();
        assert_eq!(e.to_string(), "over the limit of 4096 bytes");
        writer.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
