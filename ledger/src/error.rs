//! The ledger's error type: each variant says what was wrong, where, and with which values.

use crate::merkle::MerkleError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- decoding ---
    #[error("{kind}: input is empty")]
    Empty { kind: &'static str },
    #[error("{kind}: {len} bytes is over the limit of {max}")]
    TooLong { kind: &'static str, len: usize, max: usize },
    #[error("{kind}: unknown format version {format} (this build reads version 1)")]
    UnknownFormat { kind: &'static str, format: u8 },
    #[error("{kind}: malformed: {detail}")]
    Malformed { kind: &'static str, detail: String },
    #[error("{kind}: {trailing} bytes follow the encoded value")]
    TrailingBytes { kind: &'static str, trailing: usize },
    #[error("{kind}: not in canonical form (re-encoding gives different bytes)")]
    NonCanonical { kind: &'static str },
    #[error("{what}: expected {want} hex characters, got {detail}")]
    BadHex { what: &'static str, want: usize, detail: String },

    // --- keys ---
    #[error("key file {path}: {detail}")]
    KeyFile { path: String, detail: String },

    // --- genesis ---
    #[error("genesis: {detail}")]
    Genesis { detail: String },

    // --- records: why a record is refused ---
    #[error("record signature does not verify under submitter key {submitter}")]
    BadSignature { submitter: String },
    #[error("record is for chain {got:?}, this chain is {expected:?}")]
    WrongChainId { expected: String, got: String },
    #[error("submitter key {submitter} belongs to no agency")]
    UnknownSubmitter { submitter: String },
    #[error("agency {agency:?} has no grant for namespace {namespace:?}")]
    NamespaceNotGranted { agency: String, namespace: String },
    #[error("nonce {got} is not above submitter {submitter}'s last nonce {last} (replay?)")]
    NonceNotIncreasing { submitter: String, last: u64, got: u64 },
    #[error("{namespace}/{key} already has a record; publish a new version with Amend")]
    KeyExists { namespace: String, key: String },
    #[error("{namespace}/{key} has no record to {op}")]
    KeyNotFound { namespace: String, key: String, op: &'static str },
    #[error("{op} of {namespace}/{key} must name the record it supersedes")]
    SupersedesMissing { namespace: String, key: String, op: &'static str },
    #[error("Publish of {namespace}/{key} must not name a record to supersede")]
    SupersedesOnPublish { namespace: String, key: String },
    #[error("{namespace}/{key}: supersedes {got}, but the current head is {head}")]
    SupersedesNotHead { namespace: String, key: String, got: String, head: String },
    #[error("{namespace}/{key}: record says version {got}, but it would be version {want}")]
    VersionMismatch { namespace: String, key: String, got: u64, want: u64 },
    #[error("{namespace}/{key} was revoked by {head}; it cannot be amended or revoked again")]
    KeyRevoked { namespace: String, key: String, head: String },
    #[error("record {field} is {size} bytes; the genesis limit is {max}")]
    RecordLimit { field: &'static str, size: usize, max: usize },
    #[error("record {field} is invalid: {detail}")]
    RecordField { field: &'static str, detail: String },
    #[error("record {position} of the block: {source}")]
    RecordInBlock { position: usize, source: Box<Error> },
    #[error("record {id} appears twice in one block")]
    DuplicateInBlock { id: String },
    #[error("governance record refused: {detail}")]
    Governance { detail: String },

    // --- submissions: the HTTP API's request bodies (`submission`) ---
    #[error("the body is not the JSON this route takes: {detail}")]
    BodyNotJson { detail: String },
    #[error("{field} is not standard base64 with padding: {detail}")]
    RecordNotBase64 { field: String, detail: String },
    #[error("the body is not a binary record batch (docs/API.md): {detail}")]
    BatchNotBinary { detail: String },
    /// `records` is the count a binary batch declares; a JSON batch is refused
    /// as soon as it passes the limit, uncounted (`None`).
    #[error(
        "the batch holds {} records; this node takes at most {max} (limits.api_batch_records_max)",
        records.map_or_else(|| format!("more than {max}"), |n| n.to_string())
    )]
    BatchTooLarge { records: Option<usize>, max: usize },
    #[error("record is {size} bytes; the chain's limit is {max}")]
    RecordTooLarge { size: usize, max: usize },

    // --- proof bundles ---
    #[error("{check}: failed: {detail}")]
    Proof { check: crate::proof::Check, detail: String },

    // --- signed notes and checkpoints ---
    #[error("signed note: {detail}")]
    Note { detail: String },

    // --- blocks and the store ---
    #[error("block {height}: {detail}")]
    Block { height: u64, detail: String },
    #[error("certificate for height {height} has {power} of {total} voting power; more than 2/3 is required")]
    QuorumNotReached { height: u64, power: u64, total: u64 },
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    #[error("store at {path}: {detail}")]
    Store { path: String, detail: String },
    #[error("block {height} is final but its certificate is still being collected; retry shortly")]
    NotCertified { height: u64 },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    // --- record state proofs ---
    #[error("state proof has {siblings} siblings; a path in a tree of 256-bit keys has at most {max}")]
    StateProofTooLong { siblings: usize, max: usize },
    #[error(
        "state proof for {namespace}/{key} names neighbour leaf {neighbour}, which shares {shared_bits} leading bits \
         with the key; a non-membership proof of depth {depth} needs a different key sharing at least {depth}"
    )]
    StateProofNeighbour { namespace: String, key: String, neighbour: String, shared_bits: usize, depth: usize },
    #[error("state proof for {namespace}/{key} leads to state root {computed}, expected {expected}")]
    StateRootMismatch { namespace: String, key: String, computed: String, expected: String },
    #[error(
        "state tree: the leaves under depth {depth} position {index} disagree with the in-memory levels: {detail}"
    )]
    StateLeavesDisagree { depth: usize, index: u64, detail: String },
    #[error(
        "store at {path}: its state leaves hash to root {computed}; the tip header at height {height} says {expected}"
    )]
    StateRootDiffers { path: String, height: u64, computed: String, expected: String },
}

impl Error {
    /// A failure of this machine's storage rather than of the input: the same
    /// input may succeed elsewhere or later, so it must not decide anything
    /// that every node has to decide alike.
    pub fn is_storage(&self) -> bool {
        matches!(self, Error::Store { .. } | Error::Io(_))
    }
}
