//! The state tree's in-memory levels are built without a second copy of
//! their size: a store builds them from every leaf when it opens, beside
//! everything else it holds, so every extra copy is memory the node must have
//! at once.
//! This test binary counts the heap's bytes with its own allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use annal_ledger::merkle::Hash;
use annal_ledger::record::RecordId;
use annal_ledger::state::{Head, StateKey, Status};
use annal_ledger::state_tree::{key_hash, Levels};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout goes to the system allocator unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn building_the_levels_holds_no_second_copy_of_them() {
    // 2^17 keys: levels of depth 16 and the next one, 2^18 positions of 33 bytes (~8.7 MB).
    let n = 1u64 << 17;
    let leaves: BTreeMap<Hash, Head> = (0..n)
        .map(|i| {
            let key = StateKey { namespace: "land".into(), key: format!("parcel/{i}") };
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
            (key_hash(&key), Head { id: RecordId(id), version: 1, index: i, status: Status::Active })
        })
        .collect();

    let before = IN_USE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let levels = Levels::build(&leaves, n).expect("the leaves are consistent");
    let held = IN_USE.load(Ordering::SeqCst) - before;
    let peak = PEAK.load(Ordering::SeqCst) - before;

    assert_eq!(levels.depth(), 16);
    assert!(held >= levels.memory_bytes(), "the levels hold {held} bytes, less than their {}", levels.memory_bytes());
    // The levels themselves, plus at most an eighth for a chunk of scanned
    // leaves and the per-level vectors; (hash, fill) pairs built first and
    // split after took 1.5 times the levels.
    assert!(
        peak <= held + held / 8,
        "building levels of {held} bytes took {peak} bytes at the peak (more than one copy of them)"
    );
}
