//! The node's own byte formats: the block body consensus orders, what the
//! node stores per committed height to rebuild a consensus block, the gossip
//! envelope on the consensus topic (with compact proposals, ADR 0008), record
//! batches, and requests to one peer (sync, whole proposals, blocks) and their
//! answers. All canonical (the ledger's codec: version byte, fixed-width
//! integers, round-trip checked), all bounded when decoded.

use annal_consensus::{Digest, Payload};
use annal_ledger::codec::{self, Canonical};
use annal_ledger::record::{Encoded, RecordId, SignedRecord};
use annal_ledger::Error as LedgerError;
use bincode::{Decode, Encode};
use sha2::{Digest as _, Sha256};

/// The payload of a consensus block: the proposer's clock and the signed records, in order.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct BlockBody {
    /// Milliseconds since the Unix epoch on the proposer's clock; never below the parent's.
    pub time_ms: u64,
    /// Canonical bytes of each signed record.
    pub records: Vec<Vec<u8>>,
}

impl Canonical for BlockBody {
    const KIND: &'static str = "block body";
}

impl BlockBody {
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn from_bytes(bytes: &[u8], max: usize) -> Result<Self, LedgerError> {
        codec::decode(bytes, max)
    }

    /// The bytes of `BlockBody { time_ms, records }` (the canonical encoding:
    /// the format byte, then fixed-width little-endian integers and lengths),
    /// written from borrowed records without copying each into a `Vec` first.
    pub fn encode_of<'a>(time_ms: u64, records: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 8 + records.clone().map(|r| 8 + r.len()).sum::<usize>());
        out.push(codec::FORMAT_V1);
        out.extend_from_slice(&time_ms.to_le_bytes());
        codec::put_byte_strings(&mut out, records);
        out
    }

    /// The id of each record, in order (each one hashed here).
    pub fn ids(&self) -> Vec<RecordId> {
        self.records.iter().map(|r| SignedRecord::id_of_bytes(r)).collect()
    }

    /// The consensus payload of `time_ms` and `records`, with its content
    /// digest taken over the ids the records carry ([`BlockBody::content_digest`]).
    pub fn payload<'a>(time_ms: u64, records: impl ExactSizeIterator<Item = &'a Encoded> + Clone) -> Payload {
        let content = BlockBody::digest_of(time_ms, records.clone().map(|r| &r.id));
        Payload::with_digest(BlockBody::encode_of(time_ms, records.map(|r| r.bytes())), content)
    }

    /// A consensus payload of these bytes, its content digest computed from them.
    pub fn payload_of_bytes(bytes: Vec<u8>) -> Payload {
        let content = BlockBody::content_digest(&bytes);
        Payload::with_digest(bytes, content)
    }

    /// The content digest of a consensus payload (`annal_consensus::Payload`;
    /// the node's `Limits::payload_digest`): for the bytes of a block body,
    /// `SHA-256("annal/body/v1" ‖ time_ms ‖ record count ‖ each record's id)`
    /// (u64 little-endian) — the ids are hashed at admission anyway, so a block
    /// built or rebuilt from the pool costs one hash over 32 bytes a record
    /// instead of one over all its bytes; for any other bytes,
    /// `annal_consensus::raw_payload_digest`. Read in place: a body is the
    /// canonical encoding, so the bytes determine `(time_ms, records)` and the
    /// ids determine the records (SHA-256), and the two domains differ.
    pub fn content_digest(bytes: &[u8]) -> Digest {
        match BlockBody::ids_in_place(bytes) {
            Some((time_ms, ids)) => BlockBody::digest_of(time_ms, ids.iter()),
            None => annal_consensus::raw_payload_digest(bytes),
        }
    }

    fn digest_of<'a>(time_ms: u64, ids: impl ExactSizeIterator<Item = &'a RecordId>) -> Digest {
        let mut h = Sha256::new();
        h.update(b"annal/body/v1");
        h.update(time_ms.to_le_bytes());
        h.update((ids.len() as u64).to_le_bytes());
        for id in ids {
            h.update(id.0);
        }
        h.finalize().into()
    }

    /// The time and record ids of `bytes` if they are exactly a body's
    /// canonical encoding ([`BlockBody::encode_of`]), without copying a record.
    fn ids_in_place(bytes: &[u8]) -> Option<(u64, Vec<RecordId>)> {
        let (&format, rest) = bytes.split_first()?;
        let (time_ms, rest) = rest.split_first_chunk::<8>()?;
        let (count, rest) = rest.split_first_chunk::<8>()?;
        if format != codec::FORMAT_V1 {
            return None;
        }
        let records = codec::byte_strings(rest, u64::from_le_bytes(*count)).ok()?;
        Some((u64::from_le_bytes(*time_ms), records.into_iter().map(SignedRecord::id_of_bytes).collect()))
    }
}

/// What the node keeps per committed height besides the ledger's block: the
/// consensus block's fields that the header does not carry, the records that
/// execution refused (with their positions in the body), and the consensus
/// finalization the block was committed with. Together with the ledger's
/// records they rebuild the consensus block byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Link {
    pub view: u64,
    pub parent_view: u64,
    pub parent: [u8; 32],
    /// The consensus block digest.
    pub digest: [u8; 32],
    pub time_ms: u64,
    /// `(position in the body, record bytes)` of each record execution refused.
    pub skipped: Vec<(u32, Vec<u8>)>,
    /// The consensus finalization certificate (wire bytes) the block was
    /// committed with: its own, or that of a descendant when the block was
    /// finalized through it.
    pub finalization: Vec<u8>,
}

impl Canonical for Link {
    const KIND: &'static str = "consensus link";
}

/// Meta key of the link of `height` (hex, so keys sort by height).
pub fn link_key(height: u64) -> String {
    format!("app/link/{height:016x}")
}

/// Meta key mapping a consensus digest to its committed height.
pub fn digest_key(digest: &[u8; 32]) -> String {
    format!("app/digest/{}", hex::encode(digest))
}

/// Meta key of the epoch tail stored with an epoch's last block.
pub fn tail_key(height: u64) -> String {
    format!("app/tail/{height:016x}")
}

/// The empty blocks past an epoch's last block through which its
/// finalization came, when that finalization is a descendant's: with them a
/// node that missed the block can check, during sync, that it is final
/// (the epoch's cores, which held them, are gone). Each entry is
/// `annal_consensus::Message::BlockResponse` wire bytes, in height order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct EpochTail {
    pub blocks: Vec<Vec<u8>>,
}

impl Canonical for EpochTail {
    const KIND: &'static str = "epoch tail";
}

/// A message on the consensus topic. A sequence number makes each publish
/// unique: gossipsub drops a message whose bytes it has seen, and the
/// consensus core re-sends identical messages on purpose (Spec R10).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Envelope {
    /// A consensus wire message (`annal_consensus::Message::encode`).
    Consensus { seq: u64, message: Vec<u8> },
    /// A validator's C2SP note signature on the checkpoint of a committed block.
    Checkpoint { seq: u64, height: u64, signer: u32, signature: [u8; 64] },
    /// A leader's proposal with its records named by id (ADR 0008).
    Proposal { seq: u64, proposal: CompactProposal },
}

/// A consensus proposal whose body names its records by id instead of
/// carrying them: every validator already holds the records the leader took
/// from its pool, gossiped when they were admitted. A receiver that holds them
/// all rebuilds the block byte for byte (the body is [`BlockBody`] of
/// `time_ms` and the records' bytes, in `ids` order) and hands the core the
/// proposal it stands for; the leader's signature covers the rebuilt block's
/// digest, so a wrong id or order fails there like a forged block. A receiver
/// missing any record asks the leader for the whole proposal
/// ([`SyncRequest::Proposal`]).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct CompactProposal {
    pub height: u64,
    pub view: u64,
    pub parent_view: u64,
    pub parent: [u8; 32],
    /// The digest of the block it stands for, as the leader signed it: a
    /// receiver checks `signature` over it before any pool lookup, and it
    /// matches a core's block request to a proposal still waiting for records.
    /// The core checks the signature again over the rebuilt block's own hash,
    /// so ids that make another block are refused there.
    pub digest: [u8; 32],
    pub time_ms: u64,
    pub ids: Vec<RecordId>,
    /// The leader's proposal signature (`annal_consensus::Proposal::signature`).
    pub signature: [u8; 64],
}

impl Canonical for Envelope {
    const KIND: &'static str = "consensus envelope";
}

/// Records gossiped together (a node batches what its API admitted).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RecordBatch {
    pub records: Vec<Vec<u8>>,
}

impl Canonical for RecordBatch {
    const KIND: &'static str = "record batch";
    /// Length-prefixed byte strings only: decoding a gossiped batch does not
    /// copy it whole again to compare (each record is still checked itself).
    const ONE_FORM: bool = true;
}

/// A sync request.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum SyncRequest {
    /// Committed blocks from `from`, at most `max` and never more than 128
    /// (the answer may stop early at its byte limit, or go on past `max` up to
    /// 64 more to reach a block whose own finalization it can carry).
    Blocks { from: u64, max: u32 },
    /// Ledger certificates of heights `from..=to` (those the peer has).
    Certificates { from: u64, to: u64 },
    /// The whole proposal this node made for `height` in `view`, if it still
    /// holds it: for a receiver of its [`CompactProposal`] that lacks some of
    /// the records.
    Proposal { height: u64, view: u64 },
    /// The consensus block `digest` (a core asking for a block it lacks):
    /// asked of one peer, never gossiped.
    Block { digest: [u8; 32] },
}

impl Canonical for SyncRequest {
    const KIND: &'static str = "sync request";
}

/// One committed block as sync sends it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SyncBlock {
    /// The consensus block (`annal_consensus::Message::BlockResponse` wire bytes).
    pub block: Vec<u8>,
    /// The consensus finalization it was committed with (wire bytes).
    pub finalization: Vec<u8>,
    /// The ledger certificate, when collected.
    pub certificate: Option<Vec<u8>>,
    /// For an epoch's last block finalized through a descendant: the empty blocks up to it.
    pub tail: EpochTail,
}

/// A sync answer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum SyncResponse {
    Blocks(Vec<SyncBlock>),
    Certificates(Vec<Vec<u8>>),
    /// `annal_consensus::Message::Propose` wire bytes, or nothing when the
    /// node made no proposal in that view or no longer holds it.
    Proposal(Option<Vec<u8>>),
    /// `annal_consensus::Message::BlockResponse` wire bytes, or nothing when
    /// the node holds no block with that digest.
    Block(Option<Vec<u8>>),
}

impl Canonical for SyncResponse {
    const KIND: &'static str = "sync response";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: every node format round-trips and refuses trailing bytes and oversize input.
    #[test]
    fn formats_round_trip_and_refuse_garbage() {
        let body = BlockBody { time_ms: 7, records: vec![vec![1, 2], vec![]] };
        let bytes = body.to_bytes();
        assert_eq!(BlockBody::from_bytes(&bytes, 1024).unwrap(), body);
        for body in [
            body.clone(),
            BlockBody { time_ms: u64::MAX, records: vec![] },
            BlockBody { time_ms: 1, records: vec![vec![9; 300]; 3] },
        ] {
            assert_eq!(BlockBody::encode_of(body.time_ms, body.records.iter().map(|r| &r[..])), body.to_bytes());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(BlockBody::from_bytes(&long, 1024).is_err());
        assert!(BlockBody::from_bytes(&bytes, 4).is_err());
        let e = Envelope::Checkpoint { seq: 1, height: 2, signer: 3, signature: [9; 64] };
        assert_eq!(codec::decode::<Envelope>(&codec::encode(&e), 256).unwrap(), e);
        let r = SyncRequest::Blocks { from: 5, max: 64 };
        assert_eq!(codec::decode::<SyncRequest>(&codec::encode(&r), 64).unwrap(), r);
        let r = SyncRequest::Proposal { height: 8, view: 9 };
        assert_eq!(codec::decode::<SyncRequest>(&codec::encode(&r), 64).unwrap(), r);
        let proposal = CompactProposal {
            height: 3,
            view: 4,
            parent_view: 2,
            parent: [1; 32],
            digest: [2; 32],
            time_ms: 5,
            ids: vec![RecordId([7; 32])],
            signature: [8; 64],
        };
        let e = Envelope::Proposal { seq: 6, proposal };
        let bytes = codec::encode(&e);
        assert_eq!(codec::decode::<Envelope>(&bytes, 512).unwrap(), e);
        assert!(codec::decode::<Envelope>(&bytes, bytes.len() - 1).is_err());
        assert_eq!(link_key(255), "app/link/00000000000000ff");
    }

    /// Goal: a payload built from records holds the content digest that its bytes
    /// give when read back (what another node computes), any other bytes take the
    /// consensus crate's raw digest, and a change of time, order or record changes it.
    #[test]
    fn a_payload_built_from_records_has_the_digest_its_bytes_give() {
        use annal_ledger::keys::SecretKey;
        use annal_ledger::record::{Body, Op, Record};
        let key = SecretKey::from_seed([3; 32]);
        let records: Vec<Encoded> = (1..=3u64)
            .map(|nonce| {
                let r = Record {
                    chain_id: "c".into(),
                    namespace: "ns".into(),
                    key: format!("k{nonce}"),
                    op: Op::Publish,
                    body: Body::Inline(vec![nonce as u8; 40]),
                    metadata: Default::default(),
                    supersedes: None,
                    version: 1,
                    submitter: key.public(),
                    nonce,
                };
                Encoded::from(r.sign(&key))
            })
            .collect();
        let payload = BlockBody::payload(7, records.iter());
        assert_eq!(&payload[..], &BlockBody::encode_of(7, records.iter().map(|r| r.bytes()))[..]);
        assert_eq!(payload.content_digest(), BlockBody::content_digest(&payload));
        assert_eq!(BlockBody::payload_of_bytes(payload.to_vec()).content_digest(), payload.content_digest());
        assert_ne!(payload.content_digest(), annal_consensus::raw_payload_digest(&payload));
        let empty = BlockBody::payload(7, records[..0].iter());
        assert_eq!(
            empty.content_digest(),
            BlockBody::content_digest(&BlockBody::encode_of(7, [[0u8; 0]; 0].iter().map(|r| &r[..])))
        );

        let mut others = vec![
            BlockBody::payload(8, records.iter()),
            BlockBody::payload(7, records.iter().rev()),
            BlockBody::payload(7, records[..2].iter()),
        ];
        let mut changed = payload.to_vec();
        *changed.last_mut().unwrap() ^= 1;
        others.push(BlockBody::payload_of_bytes(changed));
        for other in &others {
            assert_ne!(other.content_digest(), payload.content_digest());
        }
        // Not a body: cut short, a byte too many, another format byte, a count past the end.
        let bytes = payload.to_vec();
        let mut long = bytes.clone();
        long.push(0);
        let mut format = bytes.clone();
        format[0] = 2;
        let mut count = bytes.clone();
        count[9..17].copy_from_slice(&u64::MAX.to_le_bytes());
        for not_body in [&bytes[..bytes.len() - 1], &long[..], &format[..], &count[..], &[][..]] {
            assert_eq!(BlockBody::content_digest(not_body), annal_consensus::raw_payload_digest(not_body));
        }
    }

    /// Goal: `RecordBatch` may skip the re-encoding check (`ONE_FORM`) because
    /// whatever decodes re-encodes to the same bytes: every one-byte change of
    /// a batch either fails to decode or is the encoding of what it decodes to.
    #[test]
    fn a_record_batch_has_one_form() {
        let batch = RecordBatch { records: vec![vec![7; 3], vec![], vec![1, 2, 3, 4, 5]] };
        let bytes = codec::encode(&batch);
        let mut decoded = 0;
        for i in 0..bytes.len() {
            for x in [0u8, 1, 2, 3, 5, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[i] = x;
                let Ok(value) = codec::decode::<RecordBatch>(&changed, 1024) else { continue };
                decoded += 1;
                assert_eq!(codec::encode(&value), changed, "byte {i} set to {x} decoded to another encoding");
            }
        }
        assert!(decoded > bytes.len(), "only {decoded} changed batches decoded: the test checks nothing");
    }
}
