//! Crash safety: a child process commits blocks in a loop and is killed with
//! SIGKILL at random moments; after each kill the store must open, hold every
//! block the child acknowledged, hold only blocks of the one true chain, and its
//! log root must equal a recomputation from the stored records, and the record
//! segments must hold those records' bytes and nothing else.
//!
//! `CRASH_KILLS` sets the number of kills (default 25); `CRASH_SEED` the seed
//! that picks the kill moments (default: fixed, printed on failure).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use annal_ledger::block::{Header, Height};
use annal_ledger::merkle::{self, Frontier};
use annal_ledger::record::{Op, RecordId, SignedRecord};
use annal_ledger::state::{MemoryState, StateKey, StateView, Status};
use annal_ledger::store::{Store, StoreOptions};
use common::*;
use rand::{Rng, SeedableRng};

const CHILD_DIR_ENV: &str = "ANNAL_CRASH_CHILD_DIR";

/// The records of block `height`: a deterministic mix of publishes, amends and
/// revokes over a small set of keys, valid on top of `state`.
fn block_records<V: StateView>(height: u64, state: &V) -> Vec<SignedRecord> {
    let count = 1 + (height * 7 % 23);
    let mut local: BTreeMap<String, (RecordId, Status, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for j in 0..count {
        let nonce = height * 1000 + j;
        let mut name = format!("k{}", (height * 31 + j) % 40);
        let head = match local.get(&name) {
            Some(h) => Some(*h),
            None => state
                .head(&StateKey { namespace: "land-titles".into(), key: name.clone() })
                .unwrap()
                .map(|h| (h.id, h.status, h.version)),
        };
        let (op, supersedes, version) = match head {
            None => (Op::Publish, None, 1),
            Some((id, Status::Active, v)) if (height + j).is_multiple_of(11) => (Op::Revoke, Some(id), v + 1),
            Some((id, Status::Active, v)) => (Op::Amend, Some(id), v + 1),
            Some((_, Status::Revoked, _)) => {
                name = format!("fresh/{height}/{j}");
                (Op::Publish, None, 1)
            }
        };
        let r = signed(21, "land-titles", &name, op, supersedes, version, nonce);
        let status = if op == Op::Revoke { Status::Revoked } else { Status::Active };
        local.insert(name, (r.id(), status, version));
        out.push(r);
    }
    out
}

/// Segments of 16 KB: a new one every few blocks, so kills land in every
/// step of a commit, segment creation included; record ids written behind
/// every few blocks too.
fn options() -> StoreOptions {
    StoreOptions { segment_bytes: 16 << 10, indexes_behind: 25, ..StoreOptions::default() }
}

/// The child: commit blocks forever (or for a minute), printing each height once it is committed.
#[test]
#[ignore = "run by crash_kill_loop as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else { return };
    let mut store = Store::open(dir.as_ref(), genesis().hash(), options()).expect("child opens the store");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let tip = store.tip().clone();
        let height = tip.height.0 + 1;
        let records = block_records(height, &store);
        let (header, cert, executed) = block(&store, store.frontier(), tip.block_hash, height, &records);
        store.commit(&header, &cert, &executed).expect("child commits");
        println!("committed {height}");
    }
}

/// The one true chain, computed in memory, extended on demand.
struct Reference {
    state: MemoryState,
    frontier: Frontier,
    headers: Vec<Header>,
}

impl Reference {
    fn header(&mut self, height: u64) -> &Header {
        while (self.headers.len() as u64) < height {
            let h = self.headers.len() as u64 + 1;
            let parent = self.headers.last().map(|h| h.hash()).unwrap_or_else(|| genesis().hash());
            let records = block_records(h, &self.state);
            let (header, _, executed) = block(&self.state, &self.frontier, parent, h, &records);
            self.frontier = executed.frontier.clone();
            self.state.absorb(&executed);
            self.headers.push(header);
        }
        &self.headers[height as usize - 1]
    }
}

#[test]
fn crash_kill_loop() {
    // Goal: SIGKILL at random moments never loses an acknowledged block or leaves a store that will not open.
    let kills: usize = std::env::var("CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(25);
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = std::env::temp_dir().join(format!("annal-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut reference = Reference { state: MemoryState::default(), frontier: Frontier::new(), headers: Vec::new() };
    let mut acked_max = 0u64;
    for kill in 0..kills {
        let context = format!("seed={seed} kill={kill}");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--ignored", "--test-threads=1"])
            .env(CHILD_DIR_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(h) = line.strip_prefix("committed ") {
                    let _ = tx.send(h.parse::<u64>().unwrap());
                }
            }
        });
        // Kill after a random number of acknowledged blocks, then a random sub-block delay.
        let wait_for = rng.gen_range(1..=12);
        for _ in 0..wait_for {
            let h =
                rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{context}: child stalled: {e}"));
            acked_max = acked_max.max(h);
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..4000)));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        reader.join().unwrap();
        acked_max = rx.try_iter().fold(acked_max, u64::max);

        let store = Store::open(&dir, genesis().hash(), options())
            .unwrap_or_else(|e| panic!("{context}: store does not open after SIGKILL: {e}"));
        let tip = store.tip().clone();
        assert!(tip.height.0 >= acked_max, "{context}: tip {} lost acknowledged height {acked_max}", tip.height.0);
        assert!(
            tip.height.0 <= acked_max + 1,
            "{context}: tip {} is past anything the child could have committed",
            tip.height.0
        );
        for h in 1..=tip.height.0 {
            let stored = store.header(Height(h)).unwrap().unwrap_or_else(|| panic!("{context}: header {h} missing"));
            assert_eq!(&stored, reference.header(h), "{context}: header {h} is not the true chain's");
        }
        let leaves: Vec<_> = (0..tip.log_size)
            .map(|i| {
                merkle::leaf_hash(
                    &store.record_bytes(i).unwrap().unwrap_or_else(|| panic!("{context}: record {i} missing")),
                )
            })
            .collect();
        let recomputed = merkle::root(&leaves);
        assert_eq!(recomputed, store.log_root(), "{context}: log root differs from the stored records");
        if tip.height.0 > 0 {
            assert_eq!(recomputed, store.header(tip.height).unwrap().unwrap().log_root, "{context}: header log root");
        }
        assert!(store.record_bytes(tip.log_size).unwrap().is_none(), "{context}: a record past the tip");
        for (i, bytes) in (0..tip.log_size).map(|i| (i, store.record_bytes(i).unwrap().unwrap())) {
            let id = annal_ledger::record::SignedRecord::id_of_bytes(&bytes);
            assert_eq!(store.index_of(&id).unwrap(), Some(i), "{context}: record {i}'s id");
        }
        assert!(store.indexed_to() <= tip.log_size, "{context}: ids written past the log");
        let scanned = store.records_in(0, tip.log_size).unwrap();
        assert_eq!(scanned.iter().map(|b| merkle::leaf_hash(b)).collect::<Vec<_>>(), leaves, "{context}: one scan");
        let past = store.records_in(tip.log_size.saturating_sub(1), tip.log_size + 1).unwrap_err().to_string();
        assert!(past.contains(&format!("record {} is missing", tip.log_size)), "{context}: {past}");
        // Bytes appended for a block whose batch never landed are cut off: the segments hold the records, no more.
        let on_disk: u64 =
            std::fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert_eq!(on_disk, scanned.iter().map(|r| r.len() as u64).sum::<u64>(), "{context}: segment bytes");
    }
    assert!(acked_max >= kills as u64, "every run acknowledged at least one block");
    let _ = std::fs::remove_dir_all(&dir);
}
