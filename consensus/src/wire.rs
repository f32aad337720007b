//! Messages and their canonical bytes: hand-written, fixed-width little-endian,
//! size-limited, no trailing bytes (Spec §Wire). The node gossips exactly these bytes.
//!
//! ```text
//! message      = tag:u8 body
//! vote         = view:u64 height:u64 digest:[32] signer:u32 signature:[64]   (tags 2 notarize, 3 nullify, 4 finalize)
//! certificate  = view:u64 height:u64 digest:[32] bitmap_len:u16 bitmap signature:[64]*popcount  (tags 5, 6, 7)
//! proposal     = block signature:[64]                                        (tag 1)
//! block        = height:u64 view:u64 parent_view:u64 parent:[32] payload_len:u32 payload
//! request      = digest:[32]                                                 (tag 8)
//! response     = block                                                       (tag 9)
//! ```
//! A nullify vote or certificate carries height 0 and the zero digest; anything else is rejected.

use crate::error::Error;
use crate::types::{raw_payload_digest, Block, ChainId, Digest, Height, Payload, ValidatorIndex, View, VALIDATORS_MAX};

/// What a signature is about. Each kind has its own signing domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VoteKind {
    Propose,
    Notarize,
    Nullify,
    Finalize,
}

impl VoteKind {
    pub fn domain(self) -> &'static [u8] {
        match self {
            VoteKind::Propose => b"annal/propose/v1",
            VoteKind::Notarize => b"annal/notarize/v1",
            VoteKind::Nullify => b"annal/nullify/v1",
            VoteKind::Finalize => b"annal/finalize/v1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VoteKind::Propose => "propose",
            VoteKind::Notarize => "notarize",
            VoteKind::Nullify => "nullify",
            VoteKind::Finalize => "finalize",
        }
    }
}

/// The bytes a validator signs (Spec §Signatures):
/// `domain(kind) || chain_id || height || view || digest` for propose, notarize and finalize;
/// `domain(nullify) || chain_id || view` for nullify.
pub fn signing_bytes(kind: VoteKind, chain_id: &ChainId, view: View, height: Height, digest: &Digest) -> Vec<u8> {
    let mut b = Vec::with_capacity(17 + 32 + 8 + 8 + 32);
    b.extend_from_slice(kind.domain());
    b.extend_from_slice(&chain_id.0);
    if kind != VoteKind::Nullify {
        b.extend_from_slice(&height.0.to_le_bytes());
    }
    b.extend_from_slice(&view.0.to_le_bytes());
    if kind != VoteKind::Nullify {
        b.extend_from_slice(digest);
    }
    b
}

/// One validator's signature on `(kind, view, height, digest)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vote {
    pub kind: VoteKind,
    pub view: View,
    pub height: Height,
    pub digest: Digest,
    pub signer: ValidatorIndex,
    pub signature: [u8; 64],
}

/// More than 2/3 of the weighted power signed the same `(kind, view, height, digest)`.
/// `signers` is a bitmap over validator indices (bit `i % 8` of byte `i / 8`);
/// `signatures` follow in increasing index order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Certificate {
    pub kind: VoteKind,
    pub view: View,
    pub height: Height,
    pub digest: Digest,
    pub signers: Vec<u8>,
    pub signatures: Vec<[u8; 64]>,
}

/// A leader's signed block for its view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub block: Block,
    pub signature: [u8; 64],
}

/// Everything validators say to each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Propose(Proposal),
    Vote(Vote),
    Certificate(Certificate),
    BlockRequest(Digest),
    BlockResponse(Block),
}

/// Size limits checked before and while decoding (Spec §Limits), and how a
/// decoded payload's content digest is computed.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub message_bytes_max: usize,
    pub payload_bytes_max: usize,
    /// The content digest of a payload read from the wire ([`Payload`]): a
    /// collision-resistant function of its bytes, the same on every node, and
    /// the one the application builds its own payloads' digests with.
    pub payload_digest: fn(&[u8]) -> Digest,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { message_bytes_max: 2 << 20, payload_bytes_max: 1 << 20, payload_digest: raw_payload_digest }
    }
}

const TAG_PROPOSE: u8 = 1;
const TAG_VOTE: [u8; 3] = [2, 3, 4];
const TAG_CERT: [u8; 3] = [5, 6, 7];
const TAG_REQUEST: u8 = 8;
const TAG_RESPONSE: u8 = 9;

fn vote_kind_tag(kind: VoteKind) -> usize {
    match kind {
        VoteKind::Notarize => 0,
        VoteKind::Nullify => 1,
        VoteKind::Finalize => 2,
        VoteKind::Propose => unreachable!("a propose signature travels inside a proposal"),
    }
}

const VOTE_KINDS: [VoteKind; 3] = [VoteKind::Notarize, VoteKind::Nullify, VoteKind::Finalize];

impl Message {
    /// The canonical bytes of this message.
    pub fn encode(&self) -> Vec<u8> {
        // Room for a whole block at once: a 2 MB payload would otherwise be copied as the vector grows.
        // (A block response is written by `encode_block_response`, into its own vector.)
        let mut w = Vec::with_capacity(match self {
            Message::Propose(p) => 1 + BLOCK_HEADER_BYTES + p.block.payload.len() + 64,
            Message::BlockResponse(_) => 0,
            _ => 256,
        });
        match self {
            Message::Propose(p) => {
                w.push(TAG_PROPOSE);
                put_block(&mut w, &p.block);
                w.extend_from_slice(&p.signature);
            }
            Message::Vote(v) => {
                w.push(TAG_VOTE[vote_kind_tag(v.kind)]);
                put_subject(&mut w, v.view, v.height, &v.digest);
                w.extend_from_slice(&v.signer.0.to_le_bytes());
                w.extend_from_slice(&v.signature);
            }
            Message::Certificate(c) => {
                w.push(TAG_CERT[vote_kind_tag(c.kind)]);
                put_subject(&mut w, c.view, c.height, &c.digest);
                w.extend_from_slice(&(c.signers.len() as u16).to_le_bytes());
                w.extend_from_slice(&c.signers);
                for s in &c.signatures {
                    w.extend_from_slice(s);
                }
            }
            Message::BlockRequest(d) => {
                w.push(TAG_REQUEST);
                w.extend_from_slice(d);
            }
            Message::BlockResponse(b) => return Message::encode_block_response(b),
        }
        w
    }

    /// `Message::BlockResponse(block.clone()).encode()` without the copy of the block.
    pub fn encode_block_response(block: &Block) -> Vec<u8> {
        let mut w = Vec::with_capacity(1 + BLOCK_HEADER_BYTES + block.payload.len());
        put_block_response_head(&mut w, block);
        w.extend_from_slice(&block.payload);
        w
    }

    /// The bytes of `encode_block_response(block)` up to its payload, which follows them: a
    /// writer that has the payload can write both parts without copying it.
    pub fn block_response_head(block: &Block) -> Vec<u8> {
        let mut w = Vec::with_capacity(1 + BLOCK_HEADER_BYTES);
        put_block_response_head(&mut w, block);
        w
    }

    /// Decodes canonical bytes, rejecting oversize input, unknown tags,
    /// non-canonical fields and trailing bytes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, Error> {
        if bytes.len() > limits.message_bytes_max {
            return Err(Error::MessageTooLarge { got: bytes.len(), max: limits.message_bytes_max });
        }
        let mut r = Reader { bytes, at: 0 };
        let tag = r.u8("tag")?;
        let (message, kind) = match tag {
            TAG_PROPOSE => {
                let block = r.block(limits)?;
                let signature = r.array::<64>("signature")?;
                (Message::Propose(Proposal { block, signature }), "proposal")
            }
            t if TAG_VOTE.contains(&t) => {
                let kind = VOTE_KINDS[(t - TAG_VOTE[0]) as usize];
                let (view, height, digest) = r.subject(kind)?;
                let signer = ValidatorIndex(r.u32("signer")?);
                let signature = r.array::<64>("signature")?;
                (Message::Vote(Vote { kind, view, height, digest, signer, signature }), "vote")
            }
            t if TAG_CERT.contains(&t) => {
                let kind = VOTE_KINDS[(t - TAG_CERT[0]) as usize];
                let (view, height, digest) = r.subject(kind)?;
                let bitmap_len = r.u16("bitmap length")? as usize;
                if bitmap_len > VALIDATORS_MAX.div_ceil(8) {
                    return Err(Error::BitmapLength {
                        got: bitmap_len,
                        want: VALIDATORS_MAX.div_ceil(8),
                        validators: VALIDATORS_MAX,
                    });
                }
                let signers = r.take(bitmap_len, "bitmap")?.to_vec();
                let count: usize = signers.iter().map(|b| b.count_ones() as usize).sum();
                let mut signatures = Vec::with_capacity(count);
                for _ in 0..count {
                    signatures.push(r.array::<64>("certificate signature")?);
                }
                (Message::Certificate(Certificate { kind, view, height, digest, signers, signatures }), "certificate")
            }
            TAG_REQUEST => (Message::BlockRequest(r.array::<32>("digest")?), "block request"),
            TAG_RESPONSE => (Message::BlockResponse(r.block(limits)?), "block response"),
            tag => return Err(Error::UnknownTag { tag }),
        };
        if r.at != bytes.len() {
            return Err(Error::TrailingBytes { kind, extra: bytes.len() - r.at });
        }
        Ok(message)
    }
}

fn put_subject(w: &mut Vec<u8>, view: View, height: Height, digest: &Digest) {
    w.extend_from_slice(&view.0.to_le_bytes());
    w.extend_from_slice(&height.0.to_le_bytes());
    w.extend_from_slice(digest);
}

/// A block's fixed fields: height, view, parent view, parent digest, payload length.
const BLOCK_HEADER_BYTES: usize = 8 + 8 + 8 + 32 + 4;

fn put_block(w: &mut Vec<u8>, b: &Block) {
    put_block_head(w, b);
    w.extend_from_slice(&b.payload);
}

fn put_block_response_head(w: &mut Vec<u8>, b: &Block) {
    w.push(TAG_RESPONSE);
    put_block_head(w, b);
}

fn put_block_head(w: &mut Vec<u8>, b: &Block) {
    w.extend_from_slice(&b.height.0.to_le_bytes());
    w.extend_from_slice(&b.view.0.to_le_bytes());
    w.extend_from_slice(&b.parent_view.0.to_le_bytes());
    w.extend_from_slice(&b.parent);
    w.extend_from_slice(&(b.payload.len() as u32).to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(Error::Truncated { field, at: self.at })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Error> {
        Ok(self.take(N, field)?.try_into().expect("take returned N bytes"))
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    fn subject(&mut self, kind: VoteKind) -> Result<(View, Height, Digest), Error> {
        let view = View(self.u64("view")?);
        let height = Height(self.u64("height")?);
        let digest = self.array::<32>("digest")?;
        if kind == VoteKind::Nullify && (height != Height(0) || digest != [0; 32]) {
            return Err(Error::NonCanonical { field: "nullify height and digest" });
        }
        Ok((view, height, digest))
    }
    fn block(&mut self, limits: &Limits) -> Result<Block, Error> {
        let height = Height(self.u64("height")?);
        let view = View(self.u64("view")?);
        let parent_view = View(self.u64("parent view")?);
        let parent = self.array::<32>("parent")?;
        let len = self.u32("payload length")? as usize;
        if len > limits.payload_bytes_max {
            return Err(Error::PayloadTooLarge { got: len, max: limits.payload_bytes_max });
        }
        let bytes = self.take(len, "payload")?;
        let payload = Payload::with_digest(bytes.to_vec(), (limits.payload_digest)(bytes));
        Ok(Block { height, view, parent_view, parent, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(payload_len: usize) -> Block {
        Block {
            height: Height(7),
            view: View(9),
            parent_view: View(8),
            parent: [3; 32],
            payload: vec![5; payload_len].into(),
        }
    }

    fn samples() -> Vec<Message> {
        let vote = |kind, height, digest| {
            Message::Vote(Vote {
                kind,
                view: View(4),
                height: Height(height),
                digest,
                signer: ValidatorIndex(2),
                signature: [9; 64],
            })
        };
        vec![
            Message::Propose(Proposal { block: block(10), signature: [1; 64] }),
            vote(VoteKind::Notarize, 3, [1; 32]),
            vote(VoteKind::Nullify, 0, [0; 32]),
            vote(VoteKind::Finalize, 3, [1; 32]),
            Message::Certificate(Certificate {
                kind: VoteKind::Finalize,
                view: View(4),
                height: Height(3),
                digest: [1; 32],
                signers: vec![0b1011],
                signatures: vec![[1; 64], [2; 64], [3; 64]],
            }),
            Message::BlockRequest([8; 32]),
            Message::BlockResponse(block(0)),
        ]
    }

    /// Goal: every message kind survives encode → decode unchanged.
    #[test]
    fn round_trip() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode(), &Limits::default()), Ok(m));
        }
    }

    /// Goal: one trailing byte and every truncation of every message are rejected.
    #[test]
    fn trailing_and_truncated_bytes_are_rejected() {
        for m in samples() {
            let mut bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(Message::decode(&bytes[..cut], &Limits::default()).is_err(), "{m:?} cut at {cut}");
            }
            bytes.push(0);
            assert!(matches!(Message::decode(&bytes, &Limits::default()), Err(Error::TrailingBytes { extra: 1, .. })));
        }
    }

    /// Goal: a block response written as its head and then its payload (how a node persists
    /// a block) is the same bytes as the encoded message, and decodes to the block.
    #[test]
    fn a_block_response_head_and_payload_are_the_message() {
        for len in [0, 1, 600] {
            let b = block(len);
            let whole = Message::BlockResponse(b.clone()).encode();
            let parts = [Message::block_response_head(&b), b.payload.to_vec()].concat();
            assert_eq!(parts, whole);
            assert_eq!(Message::decode(&parts, &Limits::default()), Ok(Message::BlockResponse(b)));
        }
    }

    /// Goal: a payload one byte over the limit and a message one byte over the limit are rejected.
    #[test]
    fn limits_are_enforced_at_one_byte_over() {
        let limits = Limits { message_bytes_max: 200, payload_bytes_max: 64, ..Limits::default() };
        let ok = Message::BlockResponse(block(64)).encode();
        assert!(Message::decode(&ok, &limits).is_ok());
        let over = Message::BlockResponse(block(65)).encode();
        assert_eq!(Message::decode(&over, &limits), Err(Error::PayloadTooLarge { got: 65, max: 64 }));
        let big = vec![0u8; 201];
        assert_eq!(Message::decode(&big, &limits), Err(Error::MessageTooLarge { got: 201, max: 200 }));
    }

    /// Goal: a nullify with a height or digest, an unknown tag and an oversized bitmap are rejected.
    #[test]
    fn non_canonical_fields_are_rejected() {
        let mut nullify = samples()[2].encode();
        nullify[1 + 8] = 1; // height byte
        assert!(matches!(Message::decode(&nullify, &Limits::default()), Err(Error::NonCanonical { .. })));
        assert_eq!(Message::decode(&[0], &Limits::default()), Err(Error::UnknownTag { tag: 0 }));
        let mut cert = vec![TAG_CERT[0]];
        cert.extend_from_slice(&[0; 48]);
        cert.extend_from_slice(&129u16.to_le_bytes());
        assert!(matches!(Message::decode(&cert, &Limits::default()), Err(Error::BitmapLength { got: 129, .. })));
    }

    /// Goal: the finalize vote signs exactly `b"annal/finalize/v1" || chain_id || height || view || block_hash`.
    #[test]
    fn finalize_signing_bytes_layout() {
        let chain = ChainId([7; 32]);
        let b = signing_bytes(VoteKind::Finalize, &chain, View(2), Height(1), &[4; 32]);
        let mut want = b"annal/finalize/v1".to_vec();
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&[4; 32]);
        assert_eq!(b, want);
        assert_ne!(b, signing_bytes(VoteKind::Notarize, &chain, View(2), Height(1), &[4; 32]));
    }
}
