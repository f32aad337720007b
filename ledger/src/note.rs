//! C2SP signed notes and transparency-log checkpoints.
//!
//! A checkpoint (c2sp.org/tlog-checkpoint) is the note text
//!
//! ```text
//! annal/<chain_id>
//! <log size>
//! <base64 log root>
//! block <height> <view> <hex block hash>
//! ```
//!
//! and a validator's finality signature *is* its C2SP ed25519 note signature
//! over that text (c2sp.org/signed-note): each validator signs once per block,
//! and a certificate turns into a signed note that standard transparency
//! tooling reads, given the validators' verifier keys (`annal genesis vkeys`).
//! The text is domain-separated from every other signed message: it begins
//! `annal/<chain_id>\n`, and a chain id contains no `/` or newline, so it can
//! never equal a message beginning `annal/<kind>/v1`.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::keys::PublicKey;
use crate::merkle::Hash;

/// The largest signed note read, in bytes.
pub const NOTE_BYTES_MAX: usize = 256 * 1024;
/// The most signature lines read (C2SP asks for at least 16; a set holds at most 1024 validators).
pub const NOTE_SIGNATURES_MAX: usize = crate::genesis::VALIDATORS_MAX + 16;
/// C2SP signature type byte for ed25519.
const ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";

fn bad(detail: impl Into<String>) -> Error {
    Error::Note { detail: detail.into() }
}

/// C2SP key ID: the first four bytes of SHA-256(name || 0x0A || 0x01 || public key).
pub fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(key.0);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A note verifier key: `<name>+<hex key ID>+<base64(0x01 || public key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub key: PublicKey,
}

impl VerifierKey {
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.key)
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        // The name holds no '+'; the base64 key may.
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("verifier key {s:?} is not name+keyid+key")));
        };
        check_key_name(name)?;
        let raw = B64.decode(key).map_err(|e| bad(format!("verifier key {name}: {e}")))?;
        if raw.len() != 33 || raw[0] != ED25519 {
            return Err(bad(format!("verifier key {name}: not an ed25519 key (type byte 0x01 and 32 bytes)")));
        }
        let vk = VerifierKey { name: name.to_string(), key: PublicKey(raw[1..].try_into().expect("33 - 1 bytes")) };
        if hex::encode(vk.key_id()) != id {
            return Err(bad(format!("verifier key {name}: key ID {id} does not match the key")));
        }
        Ok(vk)
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(&self.key.0);
        write!(f, "{}+{}+{}", self.name, hex::encode(self.key_id()), B64.encode(raw))
    }
}

/// A note key name (a validator's name): not empty, no whitespace, '+' or
/// control character (a note holding one cannot be parsed, so a validator so
/// named could sign no checkpoint anyone can read).
pub(crate) fn check_key_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        return Err(bad(format!("key name {name:?} is empty or holds a space, '+' or a control character")));
    }
    Ok(())
}

/// One signature line: key name, key ID, signature bytes (any algorithm).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

/// A note text with its signature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Parses a signed note, refusing anything the C2SP format does not allow.
    pub fn parse(note: &str) -> Result<Self, Error> {
        if note.len() > NOTE_BYTES_MAX {
            return Err(bad(format!("{} bytes is over the limit of {NOTE_BYTES_MAX}", note.len())));
        }
        if let Some(c) = note.chars().find(|&c| c < ' ' && c != '\n') {
            return Err(bad(format!("contains control character {c:?}")));
        }
        // The text ends at the last blank line.
        let split = note.rfind("\n\n").ok_or_else(|| bad("no blank line between text and signatures"))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        if !sigs.ends_with('\n') {
            return Err(bad("signature block does not end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() == NOTE_SIGNATURES_MAX {
                return Err(bad(format!("more than {NOTE_SIGNATURES_MAX} signatures")));
            }
            let rest = line
                .strip_prefix(DASH)
                .ok_or_else(|| bad(format!("signature line {line:?} does not start with an em dash and a space")))?;
            let (name, b64) =
                rest.split_once(' ').ok_or_else(|| bad(format!("signature line {line:?} has no signature")))?;
            check_key_name(name)?;
            let raw = B64.decode(b64).map_err(|e| bad(format!("signature by {name}: {e}")))?;
            if raw.len() < 5 {
                return Err(bad(format!("signature by {name} is {} bytes; at least 5 needed", raw.len())));
            }
            signatures.push(NoteSignature {
                name: name.into(),
                key_id: raw[..4].try_into().expect("4 bytes"),
                signature: raw[4..].to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(bad("no signature lines"));
        }
        Ok(SignedNote { text: text.to_string(), signatures })
    }

    /// Verifies the signatures by `known` keys. A known key whose signature
    /// fails rejects the note (C2SP); unknown keys are ignored. Returns the
    /// indices into `known` of the keys that signed, each once.
    pub fn verify(&self, known: &[VerifierKey]) -> Result<Vec<usize>, Error> {
        let mut signed = Vec::new();
        for sig in &self.signatures {
            let Some(i) = known.iter().position(|k| k.name == sig.name && k.key_id() == sig.key_id) else {
                continue;
            };
            if signed.contains(&i) {
                return Err(bad(format!("{} signed twice", sig.name)));
            }
            let ok = <[u8; 64]>::try_from(sig.signature.as_slice()).ok().is_some_and(|s| {
                ed25519_dalek::VerifyingKey::from_bytes(&known[i].key.0).is_ok_and(|vk| {
                    vk.verify_strict(self.text.as_bytes(), &ed25519_dalek::Signature::from_bytes(&s)).is_ok()
                })
            });
            if !ok {
                return Err(bad(format!("signature by {} does not verify", sig.name)));
            }
            signed.push(i);
        }
        if signed.is_empty() {
            return Err(bad("no signature by a known key"));
        }
        Ok(signed)
    }
}

impl std::fmt::Display for SignedNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            let mut raw = s.key_id.to_vec();
            raw.extend_from_slice(&s.signature);
            writeln!(f, "{DASH}{} {}", s.name, B64.encode(raw))?;
        }
        Ok(())
    }
}

/// The block a checkpoint names in its extension line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub height: u64,
    pub view: u64,
    pub hash: Hash,
}

/// A tlog-checkpoint body: origin, log size, log root, and Annal's block line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub block: BlockRef,
}

/// The origin line of chain `chain_id`.
pub fn origin(chain_id: &str) -> String {
    format!("annal/{chain_id}")
}

impl Checkpoint {
    /// The note text (what validators sign).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(160);
        let _ = writeln!(s, "{}", self.origin);
        let _ = writeln!(s, "{}", self.size);
        let _ = writeln!(s, "{}", B64.encode(self.root));
        let _ = writeln!(s, "block {} {} {}", self.block.height, self.block.view, hex::encode(self.block.hash));
        s
    }

    /// Parses a checkpoint text, refusing any other form than `to_text` writes.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("checkpoint text does not end in a newline"))?
            .split('\n')
            .collect();
        let [origin, size, root, block] = lines[..] else {
            return Err(bad(format!(
                "checkpoint has {} lines; Annal's have 4 (origin, size, root, block)",
                lines.len()
            )));
        };
        if origin.is_empty() {
            return Err(bad("empty origin line"));
        }
        let size_n: u64 = size.parse().map_err(|_| bad(format!("tree size {size:?} is not a decimal number")))?;
        if size_n.to_string() != size {
            return Err(bad(format!("tree size {size:?} is not in canonical decimal form")));
        }
        let root = decode_hash_b64(root, "root hash")?;
        let parts: Vec<&str> = block.split(' ').collect();
        let ["block", h, v, hash] = parts[..] else {
            return Err(bad(format!("extension line {block:?} is not `block <height> <view> <hash>`")));
        };
        let num = |s: &str, what: &str| -> Result<u64, Error> {
            let n: u64 = s.parse().map_err(|_| bad(format!("{what} {s:?} is not a decimal number")))?;
            if n.to_string() != s {
                return Err(bad(format!("{what} {s:?} is not in canonical decimal form")));
            }
            Ok(n)
        };
        let mut block_hash = [0u8; 32];
        if hash.len() != 64
            || hash.chars().any(|c| c.is_ascii_uppercase())
            || hex::decode_to_slice(hash, &mut block_hash).is_err()
        {
            return Err(bad(format!("block hash {hash:?} is not 64 lowercase hex characters")));
        }
        let cp = Checkpoint {
            origin: origin.to_string(),
            size: size_n,
            root,
            block: BlockRef { height: num(h, "height")?, view: num(v, "view")?, hash: block_hash },
        };
        debug_assert_eq!(cp.to_text(), text);
        Ok(cp)
    }
}

/// Decodes a standard-base64 SHA-256 hash.
pub fn decode_hash_b64(s: &str, what: &str) -> Result<Hash, Error> {
    let raw = B64.decode(s).map_err(|e| bad(format!("{what} {s:?}: {e}")))?;
    raw.as_slice().try_into().map_err(|_| bad(format!("{what} is {} bytes; a SHA-256 hash is 32", raw.len())))
}
