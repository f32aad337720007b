//! The RocksDB store: blocks, certificates, records, log nodes and record state.
//!
//! One column family per kind of entry (keys are big-endian so RocksDB's order
//! is numeric order):
//!
//! | family     | key                          | value                          |
//! |------------|------------------------------|--------------------------------|
//! | `headers`  | height                       | canonical header               |
//! | `certs`    | height                       | canonical certificate          |
//! | `spans`    | log index of a block's first record | where its records lie in the segments (`segments::Span`) |
//! | `ids`      | record id                    | log index                      |
//! | `nodes`    | level (u8) ‖ index           | hash of a complete subtree     |
//! | `leaves`   | key hash (`state_tree`)      | canonical head                 |
//! | `nonces`   | submitter key                | last nonce                     |
//! | `sets`     | height                       | validator set from height + 1  |
//! | `meta`     | `genesis`, `tip`, `leaves`, `certified`, `indexed_to` | genesis hash, canonical tip, number of leaves, highest certified height, log index up to which `ids` and `leaves` are complete |
//! | `meta`     | `app/…`                      | the caller's own entries, written in the block's batch |
//!
//! The records themselves are not in RocksDB: they are appended to segment
//! files in `<store>/segments/` (`segments`, docs/adr/0009), synced before the
//! block's batch, so their bytes reach the disk once, not three times (WAL,
//! memtable flush, compaction). A store made before session 18 kept them in a
//! `records` family; opening it moves them to segments and drops the family.
//!
//! Record ids and state leaves are written behind (docs/adr/0010): a
//! block's ids and changed leaves are kept in memory, and once
//! `StoreOptions::indexes_behind` records' worth are, they go into the `ids`
//! and `leaves` families in sorted runs, with `indexed_to`, in that block's
//! batch. Both are derived data (an id is the hash of the record's bytes, a
//! head is the key's latest record's id, version, index and operation), so
//! open reads them for the records from `indexed_to` on back out of the
//! segments, before it builds the state tree's levels and checks their root.
//!
//! A key's history is not indexed: [`Store::history`] walks back from its head
//! through each record's `supersedes` (a store made before session 17 had a
//! `history` family, state key ‖ version → log index, dropped when it opens).
//!
//! Log nodes of level 0 are not stored: a leaf is the hash of its record.
//! Nor are those of odd levels below `UPPER_LEVEL`: such a node is the hash
//! of its two children, which a proof reads instead (for level 1, two
//! records next to the one it reads anyway), which cuts the log nodes
//! written per record from about one to about a third.
//! Nodes of level `UPPER_LEVEL` and above (one per 256 leaves or fewer) are
//! also kept in memory, since complete nodes never change: a proof then reads
//! at most nine nodes and three records from disk, whatever the log size. So are the
//! `nonces` (one per submitter, loaded at open): admission asks for one per record.
//!
//! Record state is stored as the state tree's leaves only, sorted by key hash
//! (a head is looked up by the hash of its key): one put per changed key,
//! in the runs written behind, never a delete. The tree's upper levels live in memory
//! (`state_tree::Levels`), rebuilt from a scan of the leaves on open and
//! checked against the tip header's `state_root`; status proofs are served as
//! of the tip (docs/adr/0003, "Update").
//!
//! A block commit is one segment append, then one write batch (each fsynced
//! unless the store was opened without sync), so a crash at any instant leaves
//! the previous state or the new one: on open, segment bytes past the last
//! span are cut off. Opening checks the stored tip against the header, the records and
//! the log nodes it names. The store does not judge certificates: callers
//! verify them before `commit` or `put_certificate`.
//!
//! A block may be committed before its certificate exists (the node executes
//! a block once consensus has finalized it, then collects the validators'
//! signatures on the resulting checkpoint, docs/adr/0005): `put_certificate`
//! adds it later, and proofs of the block's records wait for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bincode::{Decode, Encode};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use crate::block::{Certificate, Header, Height, ValidatorSet};
use crate::codec::{self, Canonical};
use crate::error::Error;
use crate::exec::Executed;
use crate::genesis::{Charter, CHARTER_BYTES_MAX};
use crate::gov::{Governance, Proposal, GOVERNANCE_BYTES_MAX, PROPOSAL_BYTES_MAX};
use crate::keys::PublicKey;
use crate::merkle::{self, Frontier, Hash, NodeReader};
use crate::record::{RecordId, SignedRecord};
use crate::segments::{Segments, Span};
use crate::state::{decode_head, head_bytes, Head, StateKey, StateView, Status, HEAD_BYTES};
use crate::state_tree::{self, key_hash, key_hash_of, LeafReader, Levels, SpanLeaves, StateProof, StateTreeReader};

const CF_HEADERS: &str = "headers";
const CF_CERTS: &str = "certs";
const CF_SPANS: &str = "spans";
const CF_IDS: &str = "ids";
const CF_NODES: &str = "nodes";
const CF_LEAVES: &str = "leaves";
const CF_NONCES: &str = "nonces";
const CF_SETS: &str = "sets";
const CF_META: &str = "meta";
/// Log nodes at this level and above are also held in memory (see the module docs).
const UPPER_LEVEL: u8 = 8;
const FAMILIES: [&str; 9] = [CF_HEADERS, CF_CERTS, CF_SPANS, CF_IDS, CF_NODES, CF_LEAVES, CF_NONCES, CF_SETS, CF_META];
/// Families a store may still have from an earlier layout that this one drops
/// when it opens: `history` (state key ‖ version → log index), now walked
/// through the records' `supersedes` instead ([`Store::history`]).
const FAMILIES_DROPPED: [&str; 1] = ["history"];
/// Families of the layout before ADR 0003's update (state-tree nodes and heads by state key).
const FAMILIES_RETIRED: [&str; 2] = ["state", "heads"];
/// The family that held every record before segments (ADR 0009): a store that
/// has it is migrated when it opens (`Store::migrate_records`).
const FAMILY_RECORDS_RETIRED: &str = "records";

/// The last committed block.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Tip {
    pub height: Height,
    /// Hash of the tip header; the genesis hash at height 0.
    pub block_hash: Hash,
    pub log_size: u64,
}

impl Canonical for Tip {
    const KIND: &'static str = "tip";
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// fsync each commit's segment append and write-ahead log. Off only in
    /// benchmarks that say so: without it a power loss can leave spans that
    /// name segment bytes the disk never got, and the store then refuses to open.
    pub sync: bool,
    /// RocksDB block cache shared by every column family, in bytes.
    pub cache_bytes: usize,
    /// A new record segment begins once the open one would grow past this.
    pub segment_bytes: u64,
    /// Records whose ids and changed state leaves are held in memory before
    /// they are written to the `ids` and `leaves` families in sorted runs
    /// (docs/adr/0010): ~50 bytes of id and ~130 of leaf each, read back
    /// from the segments on open. 0 writes them with each block.
    pub indexes_behind: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        // 100,000 records: ~18 MB held, ~60 MB of records to read again on
        // open. 200,000 saved no more CPU and peaked ~60 MB higher in the
        // million-record run (docs/BENCHMARKS.md, session 22).
        StoreOptions { sync: true, cache_bytes: 256 << 20, segment_bytes: 256 << 20, indexes_behind: 100_000 }
    }
}

/// The computation of the state tree's in-memory levels from every leaf, at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelsBuilt {
    /// Height of the tip the levels were built for.
    pub height: Height,
    pub depth: usize,
    pub leaf_count: u64,
    pub took: Duration,
}

pub struct Store {
    db: DB,
    path: PathBuf,
    tip: Tip,
    frontier: Frontier,
    /// `upper[l - UPPER_LEVEL][i]` is the complete log node `(l, i)`.
    upper: Vec<Vec<Hash>>,
    /// The state tree's upper levels, for the tip (their root is the tip header's `state_root`).
    levels: Levels,
    /// How `levels` were built at open (a new store has none to build; after
    /// open they grow a little with each commit, never from every leaf again).
    built: Option<LevelsBuilt>,
    /// The highest height whose certificate is stored (0 before any).
    certified: Height,
    /// Every submitter's last committed nonce, as in the `nonces` family: admission
    /// asks for one per record. Submitters are registered agencies, so it stays small.
    nonces: BTreeMap<PublicKey, u64>,
    /// The committed records' bytes (`spans` says where each block's lie).
    segments: Segments,
    options: StoreOptions,
    /// The ids of records committed from `indexed_to` on, not yet in the `ids` family.
    recent_ids: std::collections::HashMap<RecordId, u64>,
    /// The heads those records made, not yet in the `leaves` family.
    recent_leaves: BTreeMap<Hash, Head>,
    /// The `ids` and `leaves` families are complete up to this log index.
    indexed_to: u64,
}

/// One version of a key: its version number, log index and record id.
pub type KeyVersion = (u64, u64, RecordId);

/// Prefix of the meta keys the store's caller owns (`Store::commit_block`'s `app_meta`).
pub const APP_META_PREFIX: &str = "app/";

impl Store {
    /// Opens (or creates) the store for the chain whose genesis hashes to `genesis_hash`.
    pub fn open(path: &Path, genesis_hash: Hash, options: StoreOptions) -> Result<Self, Error> {
        let err = |detail: String| Error::Store { path: path.display().to_string(), detail };
        let mut dropped = Vec::new();
        let mut migrate = false;
        if let Ok(existing) = DB::list_cf(&Options::default(), path) {
            dropped.extend(existing.iter().filter(|f| FAMILIES_DROPPED.contains(&f.as_str())).cloned());
            if let Some(old) = existing.iter().find(|f| FAMILIES_RETIRED.contains(&f.as_str())) {
                return Err(err(format!(
                    "has the column family {old:?} of the state layout before leaves-only storage (ADR 0003, Update); \
                     this build cannot read it: sync the chain into a new folder"
                )));
            }
            migrate = existing.iter().any(|f| f == FAMILY_RECORDS_RETIRED);
        }
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        // One memtable budget for all nine families (each would otherwise grow to 64 MB, twice):
        // keeps a node's memory under 1 GiB with a full mempool (docs/BENCHMARKS.md).
        db_opts.set_db_write_buffer_size(MEMTABLES_BYTES_MAX);
        // One block cache for every family: log nodes and state leaves are the hot reads.
        let cache = Cache::new_lru_cache(options.cache_bytes);
        let names: Vec<&str> = FAMILIES
            .iter()
            .copied()
            .chain(dropped.iter().map(String::as_str))
            .chain(migrate.then_some(FAMILY_RECORDS_RETIRED))
            .collect();
        let descriptors = names.iter().map(|name| ColumnFamilyDescriptor::new(*name, family_options(name, &cache)));
        let mut db = DB::open_cf_descriptors(&db_opts, path, descriptors).map_err(|e| err(e.to_string()))?;
        // RocksDB opens a store only with every family it has; a dropped one is then removed.
        for name in &dropped {
            db.drop_cf(name).map_err(|e| err(format!("dropping the retired column family {name:?}: {e}")))?;
        }
        // Checked before the segments open, since opening cuts off what no span
        // covers: spans that disagree with the tip must cost no record bytes.
        let meta = db.cf_handle(CF_META).expect("every column family is opened");
        let stored_tip: Option<Tip> =
            db.get_cf(meta, b"tip").map_err(|e| err(e.to_string()))?.map(|b| codec::decode(&b, 128)).transpose()?;
        if migrate {
            prepare_migration(&db, path, stored_tip.as_ref().map_or(0, |t| t.log_size))?;
        }
        let last = if migrate { None } else { last_span(&db, path)? };
        if let Some(tip) = stored_tip.as_ref().filter(|_| !migrate) {
            let spanned = last.as_ref().map_or(0, |(first, span)| first + span.lengths.len() as u64);
            if spanned != tip.log_size {
                return Err(err(format!(
                    "its spans end at log index {spanned}; the tip's log size is {}",
                    tip.log_size
                )));
            }
        }
        let segments = Segments::open(
            &path.join("segments"),
            last.as_ref().map(|(first, span)| (*first, span)),
            options.segment_bytes,
            options.sync,
        )?;
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            tip: Tip { height: Height(0), block_hash: genesis_hash, log_size: 0 },
            frontier: Frontier::new(),
            upper: Vec::new(),
            levels: Levels::default(),
            built: None,
            certified: Height(0),
            nonces: BTreeMap::new(),
            segments,
            options,
            recent_ids: std::collections::HashMap::new(),
            recent_leaves: BTreeMap::new(),
            indexed_to: 0,
        };
        match store.get(CF_META, b"genesis")? {
            None => {
                if stored_tip.is_some() {
                    return Err(err("has a tip but no genesis hash".into()));
                }
                let mut batch = WriteBatch::default();
                batch.put_cf(store.cf(CF_META), b"genesis", genesis_hash);
                batch.put_cf(store.cf(CF_META), b"tip", codec::encode(&store.tip));
                batch.put_cf(store.cf(CF_META), b"leaves", 0u64.to_be_bytes());
                batch.put_cf(store.cf(CF_META), b"indexed_to", 0u64.to_be_bytes());
                store.write(batch)?;
                if migrate {
                    store.migrate_records()?;
                }
            }
            Some(stored) if stored != genesis_hash => {
                return Err(err(format!(
                    "belongs to the chain with genesis hash {}, not {}",
                    hex::encode(&stored),
                    hex::encode(genesis_hash)
                )));
            }
            Some(_) => {
                store.tip = stored_tip.ok_or_else(|| err("has a genesis hash but no tip".into()))?;
                if let Some(c) = store.get(CF_META, b"certified")? {
                    store.certified = Height(be_u64(&c, "meta")?);
                }
                if migrate {
                    store.migrate_records()?;
                }
                store.load_upper()?;
                store.load_nonces()?;
                store.load_recent()?;
                store.check_tip()?;
            }
        }
        Ok(store)
    }

    /// Moves the records of a store made before segments (ADR 0009) out of its
    /// `records` family (`prepare_migration` checked it holds them all and
    /// cleared what a migration cut short left): appended block by block
    /// unsynced, then the segments synced, then every block's span written in
    /// one batch, then the family dropped. A crash before the drop leaves the
    /// family, and the next open starts over.
    fn migrate_records(&mut self) -> Result<(), Error> {
        let err = |detail: String| Error::Store { path: self.path.display().to_string(), detail };
        let sync = self.segments.set_sync(false);
        let mut batch = WriteBatch::default();
        let mut first = 0;
        let cf = self.db.cf_handle(FAMILY_RECORDS_RETIRED).expect("opened to migrate");
        for h in 1..=self.tip.height.0 {
            let header = self.header(Height(h))?.ok_or_else(|| err(format!("migrating: header {h} is missing")))?;
            if header.log_size == first {
                continue;
            }
            let mut opts = ReadOptions::default();
            opts.fill_cache(false);
            opts.set_iterate_upper_bound(header.log_size.to_be_bytes());
            let start = first.to_be_bytes();
            let mut records = Vec::with_capacity((header.log_size - first) as usize);
            let mode = rocksdb::IteratorMode::From(&start, Direction::Forward);
            for item in self.db.iterator_cf_opt(cf, opts, mode) {
                let (key, value) = item.map_err(|e| err(format!("migrating: {e}")))?;
                if *key != (first + records.len() as u64).to_be_bytes() {
                    break;
                }
                records.push(value);
            }
            if first + records.len() as u64 != header.log_size {
                return Err(err(format!("migrating: record {} is missing", first + records.len() as u64)));
            }
            let span = self.segments.append(first, &records)?;
            self.segments.committed(&span);
            batch.put_cf(self.cf(CF_SPANS), first.to_be_bytes(), span.encode());
            first = header.log_size;
        }
        if first != self.tip.log_size {
            return Err(err(format!(
                "migrating: the headers' records end at {first}; the tip's log size is {}",
                self.tip.log_size
            )));
        }
        self.segments.set_sync(sync);
        if sync {
            self.segments.sync_all()?;
        }
        self.write(batch)?;
        self.db.drop_cf(FAMILY_RECORDS_RETIRED).map_err(|e| err(format!("dropping the records family: {e}")))
    }

    /// Reads the ids and heads of the records from `indexed_to` on (not yet
    /// in the `ids` and `leaves` families) out of the segments, in log order,
    /// so a later version of a key replaces an earlier one. A store made
    /// before indexes were written behind has no `indexed_to`: it wrote them
    /// with every block. The levels built next from the leaves are checked
    /// against the tip header's state root, so heads read back wrong refuse
    /// the store.
    fn load_recent(&mut self) -> Result<(), Error> {
        let log_size = self.tip.log_size;
        self.indexed_to = match self.get(CF_META, b"indexed_to")? {
            Some(v) => be_u64(&v, "meta")?,
            None => log_size,
        };
        if self.indexed_to > log_size {
            return Err(Error::Store {
                path: self.path.display().to_string(),
                detail: format!(
                    "its ids and leaves are written up to log index {}, past the log's {log_size}",
                    self.indexed_to
                ),
            });
        }
        let mut ids = std::collections::HashMap::with_capacity((log_size - self.indexed_to) as usize);
        let mut leaves = BTreeMap::new();
        let mut from = self.indexed_to;
        while from < log_size {
            let to = log_size.min(from + 16_384);
            for (i, bytes) in self.records_in(from, to)?.iter().enumerate() {
                let (id, index) = (SignedRecord::id_of_bytes(bytes), from + i as u64);
                let r = crate::record_ref::parse(bytes, crate::genesis::RECORD_BYTES_CAP)?.fields(bytes);
                let status = if r.op == crate::record::Op::Revoke { Status::Revoked } else { Status::Active };
                leaves.insert(key_hash_of(r.namespace, r.key), Head { id, version: r.version, index, status });
                ids.insert(id, index);
            }
            from = to;
        }
        (self.recent_ids, self.recent_leaves) = (ids, leaves);
        Ok(())
    }

    /// Loads every submitter's last committed nonce into memory.
    fn load_nonces(&mut self) -> Result<(), Error> {
        let mut nonces = BTreeMap::new();
        for item in self.db.iterator_cf(self.cf(CF_NONCES), rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.store_err(e))?;
            let submitter: [u8; 32] = k.as_ref().try_into().map_err(|_| Error::Malformed {
                kind: "nonces",
                detail: format!("a {}-byte key where a 32-byte submitter key was expected", k.len()),
            })?;
            nonces.insert(PublicKey(submitter), be_u64(&v, "nonces")?);
        }
        self.nonces = nonces;
        Ok(())
    }

    /// Loads the upper log nodes into memory, checking that each level is contiguous.
    fn load_upper(&mut self) -> Result<(), Error> {
        let iter = self
            .db
            .iterator_cf(self.cf(CF_NODES), rocksdb::IteratorMode::From(&[UPPER_LEVEL], rocksdb::Direction::Forward));
        let mut upper: Vec<Vec<Hash>> = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(|e| self.store_err(e))?;
            let bad = || Error::Store {
                path: self.path.display().to_string(),
                detail: format!("log node key {} is malformed or out of order", hex::encode(&k)),
            };
            if k.len() != 9 || v.len() != 32 {
                return Err(bad());
            }
            let level = (k[0] - UPPER_LEVEL) as usize;
            let index = be_u64(&k[1..], "nodes")?;
            if upper.len() <= level {
                upper.resize(level + 1, Vec::new());
            }
            if index != upper[level].len() as u64 {
                return Err(bad());
            }
            upper[level].push(v.as_ref().try_into().expect("32 bytes"));
        }
        self.upper = upper;
        Ok(())
    }

    /// Checks that the stored tip matches its header, the records, the log nodes and the state leaves.
    fn check_tip(&mut self) -> Result<(), Error> {
        let err = |detail: String| Error::Store { path: self.path.display().to_string(), detail };
        let tip = self.tip.clone();
        let frontier =
            Frontier::from_reader(self, tip.log_size).map_err(|e| err(format!("rebuilding the log frontier: {e}")))?;
        let mut state_root = state_tree::EMPTY_ROOT;
        if tip.height.0 > 0 {
            let header = self
                .header(tip.height)?
                .ok_or_else(|| err(format!("tip names height {} but no header is stored", tip.height.0)))?;
            if header.hash() != tip.block_hash {
                return Err(err(format!("tip block hash differs from the stored header at height {}", tip.height.0)));
            }
            if header.log_size != tip.log_size || header.log_root != frontier.root() {
                return Err(err(format!(
                    "log after height {} has size {} and root {}; the header says size {} and root {}",
                    tip.height.0,
                    tip.log_size,
                    hex::encode(frontier.root()),
                    header.log_size,
                    hex::encode(header.log_root)
                )));
            }
            state_root = header.state_root;
        }
        if self.header(Height(tip.height.0 + 1))?.is_some() {
            return Err(err(format!("a header is stored above the tip height {}", tip.height.0)));
        }
        self.frontier = frontier;
        self.load_levels(tip.height, state_root)
    }

    /// Builds the state tree's levels from every stored leaf and checks their root against `expected`.
    fn load_levels(&mut self, height: Height, expected: Hash) -> Result<(), Error> {
        let count = self.get(CF_META, b"leaves")?.ok_or_else(|| Error::Store {
            path: self.path.display().to_string(),
            detail: "has a tip but no count of state leaves".into(),
        })?;
        let started = Instant::now();
        let levels = Levels::build(self, be_u64(&count, "meta")?)?;
        if levels.root() != expected {
            return Err(Error::StateRootDiffers {
                path: self.path.display().to_string(),
                height: height.0,
                computed: hex::encode(levels.root()),
                expected: hex::encode(expected),
            });
        }
        let took = started.elapsed();
        self.built = Some(LevelsBuilt { height, depth: levels.depth(), leaf_count: levels.leaf_count(), took });
        self.levels = levels;
        Ok(())
    }

    /// The state tree's in-memory levels (depth, number of keys, memory).
    pub fn state_levels(&self) -> &Levels {
        &self.levels
    }

    /// How the state tree's levels were built from every leaf at open (`None` for a new store).
    pub fn levels_built(&self) -> Option<&LevelsBuilt> {
        self.built.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tip(&self) -> &Tip {
        &self.tip
    }

    pub fn log_root(&self) -> Hash {
        self.frontier.root()
    }

    /// The log's right edge at the tip: `execute` extends it.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Commits a block in one write batch. `header` must extend the tip and
    /// agree with `executed`; `certificate` must have been verified by the caller.
    pub fn commit(&mut self, header: &Header, certificate: &Certificate, executed: &Executed) -> Result<(), Error> {
        self.commit_block(header, Some(certificate), executed, &[])
    }

    /// Commits a block, with its certificate when the caller has it already
    /// (else `put_certificate` adds it later), and the caller's own meta
    /// entries (keys under [`APP_META_PREFIX`]), all in one write batch.
    pub fn commit_block(
        &mut self,
        header: &Header,
        certificate: Option<&Certificate>,
        executed: &Executed,
        app_meta: &[(String, Vec<u8>)],
    ) -> Result<(), Error> {
        let height = header.height.0;
        let bad = |detail: String| Err(Error::Block { height, detail });
        if header.height.0 != self.tip.height.0 + 1 {
            return bad(format!("does not extend the tip at height {}", self.tip.height.0));
        }
        if header.parent != self.tip.block_hash {
            return bad("parent is not the tip's block hash".into());
        }
        if executed.first_index != self.tip.log_size
            || header.log_size != executed.log_size()
            || header.log_root != executed.log_root()
            || header.records_root != executed.records_root
        {
            return bad("header disagrees with the executed records (log size, log root or records root)".into());
        }
        if certificate.is_some_and(|c| c.height != header.height || c.block_hash != header.hash()) {
            return bad("certificate is for another block".into());
        }
        if let Some((key, _)) = app_meta.iter().find(|(k, _)| !k.starts_with(APP_META_PREFIX)) {
            return bad(format!("meta key {key:?} is not under {APP_META_PREFIX:?}"));
        }
        if header.state_root != executed.state_root || executed.state.root != executed.state_root {
            return bad("state_root disagrees with the executed records".into());
        }
        let (levels, update) = (&self.levels, &executed.state);
        if !levels.is_base_of(update) {
            return bad(format!(
                "was executed on state root {} (levels of depth {}, {} grown); the tip's is {} (depth {}, {} grown)",
                hex::encode(update.base_root),
                update.depth,
                update.grown,
                hex::encode(levels.root()),
                levels.depth(),
                levels.grown()
            ));
        }
        if executed.next_set.as_ref().map_or(header.validators_hash, |s| s.hash()) != header.next_validators_hash {
            return bad("next_validators_hash disagrees with the executed validator-set change".into());
        }
        if header.charter_hash != executed.charter_hash {
            return bad("charter_hash disagrees with the charter the records were executed under".into());
        }
        // The levels' next depth grows by a few positions, read from the stored
        // leaves and this block's: computed now, so a failure leaves the store untouched.
        let growth = self.levels.grow(&*self, &executed.state)?;
        let tip = Tip { height: header.height, block_hash: header.hash(), log_size: executed.log_size() };
        // The records first, synced: the batch below names their span, so a
        // crash in between leaves only bytes past the last span (cut on open).
        let span = match executed.records.is_empty() {
            true => None,
            false => Some(self.segments.append(executed.first_index, &executed.records)?),
        };
        // Record ids and state leaves are written behind (docs/adr/0010): held
        // in memory until `indexes_behind` records' worth are, then each in one
        // sorted run, which RocksDB's memtables take almost in order; a put per
        // id and per changed key in every block, among the random keys of
        // earlier blocks, and the reads of those leaves, were up to 15 % of a
        // validator (session 22).
        let log_size = executed.first_index + executed.ids.len() as u64;
        let indexes_written = self.recent_ids.len() + executed.ids.len() >= self.options.indexes_behind;
        // Sized once for what the batch will hold: grown from empty by doubling,
        // it was reallocated and copied some twenty times (4.4 % of a validator
        // when it held the records, session 10), and a block that writes the
        // indexes' run outgrew a reservation by records and faulted in each
        // regrowth's fresh pages (2 % of a validator at rate max, session 23).
        let run = match indexes_written {
            true => {
                (self.recent_ids.len() + executed.ids.len()) * batch_put(32, 8)
                    + (self.recent_leaves.len() + executed.state.leaves.len()) * batch_put(32, HEAD_BYTES)
            }
            false => 0,
        };
        let mut batch = WriteBatch::with_capacity_bytes(
            executed.nodes.len() * batch_put(9, 32) + executed.nonces.len() * batch_put(32, 8) + run + 4096,
        );
        let h = height.to_be_bytes();
        batch.put_cf(self.cf(CF_HEADERS), h, header.to_bytes());
        if let Some(c) = certificate {
            batch.put_cf(self.cf(CF_CERTS), h, c.to_bytes());
            batch.put_cf(self.cf(CF_META), b"certified", h);
        }
        for (key, value) in app_meta {
            batch.put_cf(self.cf(CF_META), key.as_bytes(), value);
        }
        // Each family's puts in key order: RocksDB's memtable keeps where the last
        // insert landed, so an insert after a smaller key skips most of the skip
        // list's search (random ids in block order cost a full search each;
        // docs/BENCHMARKS.md, session 9). Records and leaves come sorted already.
        if let Some(span) = &span {
            batch.put_cf(self.cf(CF_SPANS), executed.first_index.to_be_bytes(), span.encode());
        }
        if indexes_written {
            let block = executed.ids.iter().enumerate().map(|(i, id)| (id, executed.first_index + i as u64));
            let mut ids: Vec<(&RecordId, u64)> = self.recent_ids.iter().map(|(id, i)| (id, *i)).chain(block).collect();
            ids.sort_unstable();
            let ids_cf = self.cf(CF_IDS);
            for (id, index) in ids {
                batch.put_cf(ids_cf, id.0, index.to_be_bytes());
            }
            debug_assert!(executed.state.leaves.is_sorted_by(|a, b| a.0 < b.0), "leaves come sorted by key hash");
            // Merged as they are put, not copied first: the run is up to
            // `indexes_behind` leaves, and the batch holds them once already.
            let leaves_cf = self.cf(CF_LEAVES);
            let block = executed.state.leaves.iter().map(|(k, h)| (k, h));
            merge_newer(self.recent_leaves.iter(), block, |key_hash, head| {
                batch.put_cf(leaves_cf, key_hash, head_bytes(head));
            });
            batch.put_cf(self.cf(CF_META), b"indexed_to", log_size.to_be_bytes());
        }
        let mut nodes: Vec<([u8; 9], &Hash)> = executed
            .nodes
            .iter()
            .filter(|n| level_stored(n.0))
            .map(|(level, index, hash)| (node_key(*level, *index), hash))
            .collect();
        nodes.sort_unstable();
        let nodes_cf = self.cf(CF_NODES);
        for (key, hash) in nodes {
            batch.put_cf(nodes_cf, key, hash);
        }
        batch.put_cf(self.cf(CF_META), b"leaves", executed.state.leaf_count.to_be_bytes());
        for (submitter, nonce) in &executed.nonces {
            batch.put_cf(self.cf(CF_NONCES), submitter.0, nonce.to_be_bytes());
        }
        if let Some(set) = &executed.next_set {
            batch.put_cf(self.cf(CF_SETS), h, codec::encode(set));
        }
        let gov = &executed.gov;
        if gov.changed {
            batch.put_cf(self.cf(CF_META), GOV_STATE_KEY, codec::encode(&gov.state));
        }
        for p in &gov.touched {
            batch.put_cf(self.cf(CF_META), proposal_key(&p.id), codec::encode(p));
        }
        if let Some(charter) = &gov.next_charter {
            batch.put_cf(self.cf(CF_META), charter_key(height + 1), codec::encode(charter));
        }
        batch.put_cf(self.cf(CF_META), b"tip", codec::encode(&tip));
        self.write(batch)?;
        if let Some(span) = &span {
            self.segments.committed(span);
        }
        if indexes_written {
            self.recent_ids.clear();
            self.recent_leaves.clear();
            self.indexed_to = log_size;
        } else {
            let block = executed.ids.iter().enumerate().map(|(i, id)| (*id, executed.first_index + i as u64));
            self.recent_ids.extend(block);
            self.recent_leaves.extend(executed.state.leaves.iter().cloned());
        }
        self.tip = tip;
        if certificate.is_some() {
            self.certified = header.height;
        }
        self.frontier = executed.frontier.clone();
        self.nonces.extend(executed.nonces.iter().map(|(submitter, nonce)| (*submitter, *nonce)));
        self.levels.apply(&executed.state);
        self.levels.extend(growth);
        for (level, index, hash) in &executed.nodes {
            if *level >= UPPER_LEVEL {
                let l = (*level - UPPER_LEVEL) as usize;
                if self.upper.len() <= l {
                    self.upper.resize(l + 1, Vec::new());
                }
                assert_eq!(self.upper[l].len() as u64, *index, "complete log nodes arrive in index order");
                self.upper[l].push(*hash);
            }
        }
        Ok(())
    }

    pub fn header(&self, height: Height) -> Result<Option<Header>, Error> {
        self.get(CF_HEADERS, &height.0.to_be_bytes())?.map(|b| Header::from_bytes(&b)).transpose()
    }

    /// Stores the certificate of a committed block (verified by the caller).
    /// Idempotent; the highest certified height only grows.
    pub fn put_certificate(&mut self, certificate: &Certificate) -> Result<(), Error> {
        let height = certificate.height;
        let header = self.header(height)?.ok_or_else(|| Error::Block {
            height: height.0,
            detail: format!("certificate for a block not committed (the tip is at height {})", self.tip.height.0),
        })?;
        if certificate.block_hash != header.hash() {
            return Err(Error::Block { height: height.0, detail: "certificate is for another block".into() });
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CERTS), height.0.to_be_bytes(), certificate.to_bytes());
        if height > self.certified {
            batch.put_cf(self.cf(CF_META), b"certified", height.0.to_be_bytes());
        }
        self.write(batch)?;
        self.certified = self.certified.max(height);
        Ok(())
    }

    /// The highest height whose certificate is stored; heights below it may still lack theirs.
    pub fn certified_height(&self) -> Height {
        self.certified
    }

    /// One of the caller's meta entries (a key under [`APP_META_PREFIX`]).
    pub fn app_meta(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        assert!(key.starts_with(APP_META_PREFIX), "app meta keys start with {APP_META_PREFIX:?}");
        self.get(CF_META, key.as_bytes())
    }

    /// Log index of the first record of the block at `height` (the log size after its parent).
    pub fn first_index(&self, height: Height) -> Result<u64, Error> {
        match height.0 {
            0 | 1 => Ok(0),
            h => Ok(self.header(Height(h - 1))?.map_or(0, |p| p.log_size)),
        }
    }

    pub fn certificate(&self, height: Height) -> Result<Option<Certificate>, Error> {
        self.get(CF_CERTS, &height.0.to_be_bytes())?.map(|b| Certificate::from_bytes(&b)).transpose()
    }

    /// Every validator-set change up to `height`, in order: the block that
    /// announced it, its certificate, and the set in force after it. An
    /// auditor follows this chain from the genesis set (`proof::SetChange`).
    pub fn set_changes(&self, height: Height) -> Result<Vec<(Header, Certificate, ValidatorSet)>, Error> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SETS), rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.store_err(e))?;
            let h = Height(be_u64(&k, "sets")?);
            if h > height {
                break;
            }
            let missing = |what: &str| Error::Store {
                path: self.path.display().to_string(),
                detail: format!("{what} of set change at height {} is missing", h.0),
            };
            let header = self.header(h)?.ok_or_else(|| missing("header"))?;
            let cert = self.certificate(h)?.ok_or_else(|| missing("certificate"))?;
            out.push((header, cert, codec::decode(&v, 1 << 20)?));
        }
        Ok(out)
    }

    /// The validator set that certifies `height` when a block below it changed
    /// the set; `None` while it is still genesis's. Needs no certificates.
    pub fn set_in_force(&self, height: Height) -> Result<Option<ValidatorSet>, Error> {
        let Some(below) = height.0.checked_sub(1) else { return Ok(None) };
        let from = below.to_be_bytes();
        let mut it = self.db.iterator_cf(self.cf(CF_SETS), rocksdb::IteratorMode::From(&from, Direction::Reverse));
        match it.next() {
            Some(item) => {
                let (_, v) = item.map_err(|e| self.store_err(e))?;
                Ok(Some(codec::decode(&v, 1 << 20)?))
            }
            None => Ok(None),
        }
    }

    /// Governance after the tip; `None` until a block changed it (then it is genesis's).
    pub fn governance(&self) -> Result<Option<Governance>, Error> {
        self.get(CF_META, GOV_STATE_KEY)?.map(|b| codec::decode(&b, GOVERNANCE_BYTES_MAX)).transpose()
    }

    /// The charter in force at `height`; `None` when it is still genesis's.
    pub fn charter_at(&self, height: Height) -> Result<Option<Charter>, Error> {
        let from = charter_key(height.0);
        let mut it = self.db.iterator_cf(self.cf(CF_META), rocksdb::IteratorMode::From(&from, Direction::Reverse));
        match it.next() {
            Some(item) => {
                let (k, v) = item.map_err(|e| self.store_err(e))?;
                if !k.starts_with(CHARTER_PREFIX) {
                    return Ok(None);
                }
                Ok(Some(codec::decode(&v, CHARTER_BYTES_MAX)?))
            }
            None => Ok(None),
        }
    }

    /// At most `limit` proposals with ids above `after` (from the first when `None`), in id order.
    pub fn proposals_after(&self, after: Option<&RecordId>, limit: usize) -> Result<Vec<Proposal>, Error> {
        let mut out = Vec::new();
        let from = after.map_or_else(|| PROPOSAL_PREFIX.to_vec(), proposal_key);
        let it = self.db.iterator_cf(self.cf(CF_META), rocksdb::IteratorMode::From(&from, Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(|e| self.store_err(e))?;
            if !k.starts_with(PROPOSAL_PREFIX) || out.len() >= limit {
                break;
            }
            if after.is_some() && k[..] == from[..] {
                continue;
            }
            out.push(codec::decode(&v, PROPOSAL_BYTES_MAX)?);
        }
        Ok(out)
    }

    /// One proposal, as it stands.
    pub fn proposal(&self, id: &RecordId) -> Result<Option<Proposal>, Error> {
        self.get(CF_META, &proposal_key(id))?.map(|b| codec::decode(&b, PROPOSAL_BYTES_MAX)).transpose()
    }

    /// The height of the block that committed log entry `index` (binary search over headers).
    pub fn height_of_index(&self, index: u64) -> Result<Height, Error> {
        if index >= self.tip.log_size {
            return Err(Error::Store {
                path: self.path.display().to_string(),
                detail: format!("index {index} is past the log size {}", self.tip.log_size),
            });
        }
        // The first height whose log_size is above `index`.
        let (mut lo, mut hi) = (1, self.tip.height.0);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let header = self.header(Height(mid))?.ok_or_else(|| Error::Store {
                path: self.path.display().to_string(),
                detail: format!("header {mid} is missing"),
            })?;
            if header.log_size > index {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(Height(lo))
    }

    /// Canonical bytes of the signed record at log `index`.
    pub fn record_bytes(&self, index: u64) -> Result<Option<Vec<u8>>, Error> {
        if index >= self.tip.log_size {
            return Ok(None);
        }
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_SPANS));
        iter.seek_for_prev(index.to_be_bytes());
        let Some((first, span)) = self.span(&iter)? else { return Ok(None) };
        match index - first {
            at if at < span.lengths.len() as u64 => Ok(self.segments.read(&span, at as usize..at as usize + 1)?.pop()),
            _ => Ok(None),
        }
    }

    /// Canonical bytes of the records at log indices `from..to`, in order, or
    /// an error if any is missing. One read per block, after one forward scan
    /// of the spans that leaves the block cache alone: sync and audits read
    /// whole blocks, and would otherwise evict the log nodes and state leaves
    /// that proofs and execution read again.
    pub fn records_in(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::with_capacity(to.saturating_sub(from).min(1 << 20) as usize);
        if from < to && from < self.tip.log_size {
            let mut opts = ReadOptions::default();
            opts.fill_cache(false);
            let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_SPANS), opts);
            iter.seek_for_prev(from.to_be_bytes());
            while let Some((first, span)) = self.span(&iter)? {
                let next = from + out.len() as u64;
                let end = first + span.lengths.len() as u64;
                if next >= to || first > next || end <= next {
                    break;
                }
                let range = (next - first) as usize..(to.min(end) - first) as usize;
                out.extend(self.segments.read(&span, range)?);
                iter.next();
            }
        }
        match from + out.len() as u64 {
            end if end >= to => Ok(out),
            missing => Err(Error::Store {
                path: self.path.display().to_string(),
                detail: format!("record {missing} is missing (reading records {from}..{to})"),
            }),
        }
    }

    /// The span under a `spans` iterator: its block's first log index and where its records lie.
    fn span(&self, iter: &rocksdb::DBRawIterator<'_>) -> Result<Option<(u64, Span)>, Error> {
        span_under(iter, &self.path)
    }

    pub fn index_of(&self, id: &RecordId) -> Result<Option<u64>, Error> {
        if let Some(&index) = self.recent_ids.get(id) {
            return Ok(Some(index));
        }
        self.get(CF_IDS, &id.0)?.map(|b| be_u64(&b, "ids")).transpose()
    }

    /// The `ids` and `leaves` families are complete up to this log index;
    /// what later records made is held in memory (docs/adr/0010).
    pub fn indexed_to(&self) -> u64 {
        self.indexed_to
    }

    /// Up to `limit` versions of a key, oldest first, `(version, log index,
    /// record id)`, the newest of them `newest` (the key's head when `None`),
    /// and whether older ones exist. Walked back through each record's
    /// `supersedes` (looked up in `ids`): execution takes an amend or a revoke
    /// only if it supersedes the head, so a key's versions are exactly that
    /// chain. No index of its own is kept: one was a put per record on every
    /// commit (ADR 0001, "Store layout"; docs/BENCHMARKS.md, session 17).
    pub fn history(
        &self,
        key: &StateKey,
        newest: Option<KeyVersion>,
        limit: usize,
    ) -> Result<(Vec<KeyVersion>, bool), Error> {
        let newest = match newest {
            Some(n) => n,
            None => match self.head(key)? {
                Some(head) => (head.version, head.index, head.id),
                None => return Ok((Vec::new(), false)),
            },
        };
        let broken = |detail: String| Error::Store {
            path: self.path.display().to_string(),
            detail: format!("history of {:?} in {:?}: {detail}", key.key, key.namespace),
        };
        let mut out = Vec::with_capacity(limit.min(newest.0 as usize));
        let (mut version, mut index, mut id) = newest;
        let mut older = false;
        while out.len() < limit {
            out.push((version, index, id));
            let bytes = self.record_bytes(index)?.ok_or_else(|| broken(format!("record {index} is missing")))?;
            let record = SignedRecord::from_bytes_max(&bytes, crate::genesis::RECORD_BYTES_CAP)?.record;
            if record.version != version || record.namespace != key.namespace || record.key != key.key {
                return Err(broken(format!("record {index} is not version {version} of this key")));
            }
            let Some(previous) = record.supersedes else { break };
            if version == 1 {
                return Err(broken(format!("record {index} is version 1 but supersedes {previous}")));
            }
            if out.len() == limit {
                older = true;
                break;
            }
            index = self.index_of(&previous)?.ok_or_else(|| broken(format!("record {previous} is not in the log")))?;
            (version, id) = (version - 1, previous);
        }
        if !older && version != 1 && limit > 0 {
            return Err(broken(format!("the oldest version found is {version}, not 1")));
        }
        out.reverse();
        Ok((out, older))
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(size)?;
        self.prefetched(|r| merkle::inclusion_proof(r, index, size))
    }

    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(size2)?;
        self.prefetched(|r| merkle::consistency_proof(r, size1, size2))
    }

    /// Runs a proof computation twice: first to learn which log nodes it reads
    /// (their positions depend only on indices and sizes, never on hash
    /// values), then over those nodes fetched in one RocksDB multi-get per
    /// family instead of one get each.
    fn prefetched<T>(
        &self,
        run: impl Fn(&Prefetch<'_>) -> Result<T, merkle::ProofGenError<Error>>,
    ) -> Result<T, Error> {
        let planner = Prefetch { store: self, plan: Some(Default::default()), fetched: Default::default() };
        // A planning run's result is meaningless (its hashes are zeros); argument errors recur below.
        let _ = run(&planner);
        let keys = planner.plan.expect("planning").into_inner();
        let reader = Prefetch { store: self, plan: None, fetched: self.fetch_nodes(&keys)? };
        run(&reader).map_err(|e| self.proof_err(e))
    }

    /// The log nodes at `keys`, or for a node not stored, its children:
    /// records read in runs of consecutive indices, stored nodes in one multi-get.
    fn fetch_nodes(&self, keys: &[(u8, u64)]) -> Result<std::collections::BTreeMap<(u8, u64), Hash>, Error> {
        let mut out = std::collections::BTreeMap::new();
        let (mut leaves, mut stored) = (Vec::new(), Vec::new());
        let children = keys.iter().flat_map(|&(level, index)| match level_derived(level) {
            true => [Some((level - 1, 2 * index)), Some((level - 1, 2 * index + 1))],
            false => [Some((level, index)), None],
        });
        for (level, index) in children.flatten() {
            match level {
                0 => leaves.push(index),
                l if l >= UPPER_LEVEL => {
                    out.insert((level, index), self.node(level, index)?);
                }
                _ => stored.push((level, index)),
            }
        }
        leaves.sort_unstable();
        leaves.dedup();
        stored.sort_unstable();
        stored.dedup();
        for run in leaves.chunk_by(|a, b| a + 1 == *b) {
            let (from, to) = (run[0], run[run.len() - 1] + 1);
            // A run past the log (a planning run given bad sizes) is left to the
            // proof's own reads, which say what is wrong.
            if let Ok(records) = self.records_in(from, to) {
                for (index, bytes) in (from..).zip(&records) {
                    out.insert((0, index), merkle::leaf_hash(bytes));
                }
            }
        }
        let node_keys: Vec<[u8; 9]> = stored.iter().map(|&(l, i)| node_key(l, i)).collect();
        for (key, value) in stored.iter().zip(self.db.batched_multi_get_cf(self.cf(CF_NODES), &node_keys, true)) {
            if let Some(bytes) = value.map_err(|e| self.store_err(e))? {
                if let Ok(hash) = <Hash>::try_from(bytes.as_ref()) {
                    out.insert(*key, hash);
                }
            }
        }
        Ok(out)
    }

    /// The log root at any past size.
    pub fn root_at(&self, size: u64) -> Result<Hash, Error> {
        self.check_size(size)?;
        merkle::root_at(self, size).map_err(|e| self.proof_err(e))
    }

    fn check_size(&self, size: u64) -> Result<(), Error> {
        if size > self.tip.log_size {
            return Err(Error::Store {
                path: self.path.display().to_string(),
                detail: format!("log size {size} is past the tip's log size {}", self.tip.log_size),
            });
        }
        Ok(())
    }

    fn proof_err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store { path: self.path.display().to_string(), detail: format!("proof: {e}") }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("every column family is opened")
    }

    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.db.get_cf(self.cf(family), key).map_err(|e| self.store_err(e))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(self.options.sync);
        self.db.write_opt(batch, &opts).map_err(|e| self.store_err(e))
    }

    fn store_err(&self, e: rocksdb::Error) -> Error {
        Error::Store { path: self.path.display().to_string(), detail: e.to_string() }
    }

    /// Bytes of the record segments and of live SST files, as RocksDB reports them.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.bytes() + self.property_sum("rocksdb.total-sst-files-size")
    }

    /// Memory RocksDB holds for this store, as it reports it.
    pub fn memory(&self) -> StoreMemory {
        StoreMemory {
            // One cache serves every family: read it once.
            block_cache: self.property(FAMILIES[0], "rocksdb.block-cache-usage"),
            memtables: self.property_sum("rocksdb.cur-size-all-mem-tables"),
            table_readers: self.property_sum("rocksdb.estimate-table-readers-mem"),
        }
    }

    /// An integer property RocksDB reports for one column family (0 if it reports none).
    fn property(&self, family: &str, name: &str) -> u64 {
        self.db.property_int_value_cf(self.cf(family), name).ok().flatten().unwrap_or(0)
    }

    /// `property` summed over every column family.
    fn property_sum(&self, name: &str) -> u64 {
        FAMILIES.iter().map(|cf| self.property(cf, name)).sum()
    }

    /// Flushes memtables to SST files (benchmarks measure disk use after this).
    pub fn flush(&self) -> Result<(), Error> {
        for cf in FAMILIES {
            self.db.flush_cf(self.cf(cf)).map_err(|e| self.store_err(e))?;
        }
        Ok(())
    }

    /// Compacts every family (benchmarks: disk use at rest).
    pub fn compact(&self) {
        for cf in FAMILIES {
            self.db.compact_range_cf(self.cf(cf), None::<&[u8]>, None::<&[u8]>);
        }
    }
}

/// Bytes of memory the store's RocksDB holds, by use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// The block cache (shared by every family; at most `StoreOptions::cache_bytes`).
    pub block_cache: u64,
    /// Memtables, active and waiting to flush (at most about `MEMTABLES_BYTES_MAX`).
    pub memtables: u64,
    /// Index and filter blocks of open SST files, outside the block cache.
    pub table_readers: u64,
}

/// A node reader that either records which nodes a computation reads (`plan`)
/// or serves them from a prefetched map, falling back to the store.
struct Prefetch<'a> {
    store: &'a Store,
    plan: Option<std::cell::RefCell<Vec<(u8, u64)>>>,
    fetched: std::collections::BTreeMap<(u8, u64), Hash>,
}

impl NodeReader for Prefetch<'_> {
    type Error = Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Error> {
        if let Some(plan) = &self.plan {
            plan.borrow_mut().push((level, index));
            return Ok([0; 32]);
        }
        match self.fetched.get(&(level, index)) {
            Some(hash) => Ok(*hash),
            None if level_derived(level) => {
                Ok(merkle::node_hash(&self.node(level - 1, 2 * index)?, &self.node(level - 1, 2 * index + 1)?))
            }
            None => self.store.node(level, index),
        }
    }
}

impl NodeReader for Store {
    type Error = Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Error> {
        let missing = || Error::Store {
            path: self.path.display().to_string(),
            detail: format!("log node ({level}, {index}) is missing"),
        };
        if level == 0 {
            let bytes = self.record_bytes(index)?.ok_or_else(missing)?;
            return Ok(merkle::leaf_hash(&bytes));
        }
        if level >= UPPER_LEVEL {
            let l = (level - UPPER_LEVEL) as usize;
            return self.upper.get(l).and_then(|nodes| nodes.get(index as usize)).copied().ok_or_else(missing);
        }
        if level_derived(level) {
            return Ok(merkle::node_hash(&self.node(level - 1, 2 * index)?, &self.node(level - 1, 2 * index + 1)?));
        }
        let bytes = self.get(CF_NODES, &node_key(level, index))?.ok_or_else(missing)?;
        bytes.as_slice().try_into().map_err(|_| missing())
    }
}

impl StateView for Store {
    fn head(&self, key: &StateKey) -> Result<Option<Head>, Error> {
        self.leaf(&key_hash(key))
    }

    fn last_nonce(&self, submitter: &PublicKey) -> Result<Option<u64>, Error> {
        Ok(self.nonces.get(submitter).copied())
    }

    fn state_root(&self) -> Hash {
        self.levels.root()
    }
}

impl LeafReader for Store {
    fn leaves_in(&self, from: &Hash, to_inclusive: &Hash) -> Result<Vec<(Hash, Head)>, Error> {
        Ok(self.leaves_in_each(&[(*from, *to_inclusive)])?.leaves)
    }

    /// One RocksDB iterator for all the spans: a seek each, no iterator
    /// set-up each; the leaves held in memory (written behind) merged in.
    fn leaves_in_each(&self, spans: &[(Hash, Hash)]) -> Result<SpanLeaves, Error> {
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_LEAVES));
        // A bottom subtree holds 2 to 4 leaves on average.
        let mut out = SpanLeaves::with_capacity(spans.len());
        for (from, to_inclusive) in spans {
            let start = out.leaves.len();
            iter.seek(from);
            while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
                if k > &to_inclusive[..] {
                    break;
                }
                let key_hash: Hash = k.try_into().map_err(|_| Error::Malformed {
                    kind: "leaves",
                    detail: format!("a {}-byte key where a 32-byte key hash was expected", k.len()),
                })?;
                out.leaves.push((key_hash, decode_head(v)?));
                iter.next();
            }
            iter.status().map_err(|e| self.store_err(e))?;
            let mut recent = self.recent_leaves.range(*from..=*to_inclusive).peekable();
            if recent.peek().is_some() {
                let stored = out.leaves.split_off(start);
                merge_newer(stored.iter().map(|(k, h)| (k, h)), recent, |k, h| out.leaves.push((*k, *h)));
            }
            out.ends.push(out.leaves.len());
        }
        Ok(out)
    }

    fn leaf(&self, key_hash: &Hash) -> Result<Option<Head>, Error> {
        if let Some(head) = self.recent_leaves.get(key_hash) {
            return Ok(Some(*head));
        }
        self.get(CF_LEAVES, key_hash)?.map(|b| decode_head(&b)).transpose()
    }
}

/// Calls `each` with the leaves of `older` and `newer` (each sorted by key
/// hash) in key order, `newer`'s head where both hold a key.
fn merge_newer<'a>(
    older: impl Iterator<Item = (&'a Hash, &'a Head)>,
    newer: impl Iterator<Item = (&'a Hash, &'a Head)>,
    mut each: impl FnMut(&Hash, &Head),
) {
    let mut older = older.peekable();
    for (key_hash, head) in newer {
        while let Some((k, h)) = older.next_if(|(k, _)| *k < key_hash) {
            each(k, h);
        }
        older.next_if(|(k, _)| *k == key_hash);
        each(key_hash, head);
    }
    older.for_each(|(k, h)| each(k, h));
}

impl StateTreeReader for Store {
    fn levels(&self) -> &Levels {
        &self.levels
    }
}

impl Store {
    /// Proves, as of the tip, whether `key` has a head and what it is.
    pub fn state_proof(&self, key: &StateKey) -> Result<StateProof, Error> {
        state_tree::prove(self, key)
    }
}

/// Before a store made before segments is migrated: checks that its `records`
/// family holds exactly the log's `log_size` records (or refuses, touching
/// nothing), then clears the spans a migration cut short wrote (its segments
/// go when they open with no span).
fn prepare_migration(db: &DB, path: &Path, log_size: u64) -> Result<(), Error> {
    let err = |detail: String| Error::Store { path: path.display().to_string(), detail };
    let records = db.cf_handle(FAMILY_RECORDS_RETIRED).expect("opened to migrate");
    let mut iter = db.raw_iterator_cf(records);
    iter.seek_to_first();
    let first = iter.key().map(|k| be_u64(k, "records")).transpose()?;
    iter.seek_to_last();
    let last = iter.key().map(|k| be_u64(k, "records")).transpose()?;
    iter.status().map_err(|e| err(e.to_string()))?;
    let held = match (first, last) {
        (Some(0), Some(last)) => last + 1,
        (None, None) => 0,
        _ => u64::MAX,
    };
    if held != log_size {
        return Err(err(format!(
            "keeps its records in the column family {FAMILY_RECORDS_RETIRED:?} (the layout before record segments, \
             ADR 0009), which holds records {first:?} to {last:?} where the log has {log_size}: this store cannot \
             be migrated; sync the chain into a new folder"
        )));
    }
    let spans = db.cf_handle(CF_SPANS).expect("every column family is opened");
    db.delete_range_cf(spans, &[0u8; 8][..], &[0xffu8; 9][..]).map_err(|e| err(format!("clearing spans: {e}")))
}

/// The last block's span and the log index of its first record (`None` before any record).
fn last_span(db: &DB, path: &Path) -> Result<Option<(u64, Span)>, Error> {
    let cf = db.cf_handle(CF_SPANS).expect("every column family is opened");
    let mut iter = db.raw_iterator_cf(cf);
    iter.seek_to_last();
    span_under(&iter, path)
}

/// The span under a `spans` iterator: its block's first log index and where its records lie.
fn span_under(iter: &rocksdb::DBRawIterator<'_>, path: &Path) -> Result<Option<(u64, Span)>, Error> {
    match (iter.key(), iter.value()) {
        (Some(k), Some(v)) => Ok(Some((be_u64(k, "spans")?, Span::decode(v)?))),
        _ => iter
            .status()
            .map(|()| None)
            .map_err(|e| Error::Store { path: path.display().to_string(), detail: e.to_string() }),
    }
}

fn family_options(name: &str, cache: &Cache) -> Options {
    let mut opts = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    match name {
        // Point lookups (by record id, key hash): a bloom filter saves a disk read per miss.
        // (Nonces are read once, at open, and then held in memory.)
        CF_IDS | CF_LEAVES => {
            table.set_bloom_filter(10.0, false);
            // And one over the memtable: admission asks for every new record
            // whether its id is known yet (it is not), which otherwise walks
            // the memtable's skip list to the end each time.
            opts.set_memtable_prefix_bloom_ratio(0.1);
            opts.set_memtable_whole_key_filtering(true);
            if name == CF_IDS {
                // Ids arrive in random order and are only read whole (through the
                // bloom filters), so a small memtable costs no reads and keeps each
                // insert's skip-list search in cache: a million records' writes
                // took 10 % less time than with the default 64 MB (docs/BENCHMARKS.md, session 18).
                opts.set_write_buffer_size(IDS_MEMTABLE_BYTES);
            }
        }
        _ => {}
    }
    opts.set_block_based_table_factory(&table);
    // Hashes, ids and small heads: nothing that compresses.
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    opts
}

/// What one put of a `key`-byte key and a `value`-byte value takes in a
/// RocksDB write batch: both, a tag byte, the family's id and the two lengths
/// (varints, one byte each at the sizes of ids, nonces, leaves and log nodes).
const fn batch_put(key: usize, value: usize) -> usize {
    4 + key + value
}

/// The ids family's memtable is flushed at this size (other families: RocksDB's 64 MB).
const IDS_MEMTABLE_BYTES: usize = 16 << 20;

/// Memory all memtables together may hold before RocksDB flushes the largest.
const MEMTABLES_BYTES_MAX: usize = 128 << 20;

const GOV_STATE_KEY: &[u8] = b"gov";
const CHARTER_PREFIX: &[u8] = b"charter/";
const PROPOSAL_PREFIX: &[u8] = b"proposal/";

/// Meta key of the charter in force from `height` on.
fn charter_key(height: u64) -> Vec<u8> {
    [CHARTER_PREFIX, &height.to_be_bytes()].concat()
}

fn proposal_key(id: &RecordId) -> Vec<u8> {
    [PROPOSAL_PREFIX, &id.0].concat()
}

/// Whether complete log nodes of `level` are kept in the `nodes` family: the
/// even levels from 2 on (those from `UPPER_LEVEL` on also in memory).
fn level_stored(level: u8) -> bool {
    level >= UPPER_LEVEL || (level > 0 && level.is_multiple_of(2))
}

/// Whether a log node of `level` is computed from its two children, not stored:
/// the odd levels below `UPPER_LEVEL` (level 0 is the record's own hash).
fn level_derived(level: u8) -> bool {
    level > 0 && !level_stored(level)
}

fn node_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn be_u64(bytes: &[u8], family: &'static str) -> Result<u64, Error> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::Malformed {
        kind: family,
        detail: format!("{} bytes where 8 were expected", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}
