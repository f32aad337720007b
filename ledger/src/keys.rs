//! Keys and signatures: ed25519 public keys, domain-separated signing, and key files.
//!
//! Every signature in Annal is over `b"annal/<kind>/v1" || chain_id || bytes`
//! (DESIGN.md), so a signature made for one kind of message or one chain can
//! never be replayed as another. The split between chain id and bytes is
//! unambiguous: every signed payload begins with the format byte 0x01, and a
//! chain id holds only lowercase letters, digits, '.', '_' and '-'.

use std::fmt;
use std::path::Path;

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::note::Checkpoint;

/// The kinds of signed message with a domain tag. (Finality signatures are
/// C2SP note signatures over a checkpoint text instead; see `note`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    Record,
}

impl Domain {
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::Record => b"annal/record/v1",
        }
    }
}

/// The exact bytes an ed25519 signature of `domain` covers.
pub fn signing_message(domain: Domain, chain_id: &str, bytes: &[u8]) -> Vec<u8> {
    Message::signing(domain, chain_id, bytes).0.concat()
}

/// A signed message as the parts it is the concatenation of: the batch check
/// hashes them in turn rather than joining them first (building each record's
/// message was an allocation and a ~600-byte copy per signature, ~0.8 % of a
/// validator at rate max; docs/BENCHMARKS.md, session 14).
#[derive(Clone, Copy, Debug)]
pub struct Message<'a>(pub [&'a [u8]; 3]);

impl<'a> Message<'a> {
    /// `signing_message(domain, chain_id, bytes)`, unjoined.
    pub fn signing(domain: Domain, chain_id: &'a str, bytes: &'a [u8]) -> Message<'a> {
        assert_eq!(bytes.first(), Some(&crate::codec::FORMAT_V1), "every signed payload starts with the format byte");
        Message([domain.tag(), chain_id.as_bytes(), bytes])
    }

    /// A message that is one piece already.
    pub fn whole(bytes: &'a [u8]) -> Message<'a> {
        Message([bytes, &[], &[]])
    }
}

/// An ed25519 public key (32 bytes), written as lowercase hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Signature(pub [u8; 64]);

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self, Error> {
        Ok(PublicKey(hex_array(s, "public key")?))
    }

    /// Checks `signature` over `signing_message(domain, chain_id, bytes)` by
    /// the cofactored rule (`verify_cofactored`), the rule for every record.
    pub fn verify(&self, domain: Domain, chain_id: &str, bytes: &[u8], signature: &Signature) -> bool {
        verify_cofactored(&[(self, Message::signing(domain, chain_id, bytes), signature)])
    }

    /// Checks a finality vote: a C2SP note signature over the checkpoint text.
    pub fn verify_checkpoint(&self, checkpoint: &Checkpoint, signature: &Signature) -> bool {
        self.verify_raw(checkpoint.to_text().as_bytes(), signature)
    }

    fn verify_raw(&self, message: &[u8], signature: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature.0)).is_ok()
    }
}

/// Whether every `(key, message, signature)` verifies by the cofactored
/// ed25519 equation `[8](sB - kA - R) = 0`, with `k = SHA-512(R || A || M)`,
/// `s` canonical (below the group order) and `A`, `R` any encodings that
/// decode to curve points (the rule of ZIP 215). Many signatures are checked
/// in one equation with coefficients drawn from a hash of all of them.
///
/// Why this rule and not ed25519-dalek's `verify_strict`: a node checks a
/// record alone or in a batch with whatever else arrived, and nodes must
/// never disagree about a record. `verify_strict` and dalek's batch (which is
/// cofactorless) answer differently for signatures whose `R` has a small-order
/// part, and a submitter can craft those with its own key. Under the
/// cofactored equation one signature alone and any batch holding it give the
/// same answer (up to a 2^-128 chance per batch). Every signature an
/// ordinary ed25519 signer makes verifies under both rules.
pub fn verify_cofactored(items: &[(&PublicKey, Message<'_>, &Signature)]) -> bool {
    SCRATCH.with_borrow_mut(|scratch| {
        let ok = verify_cofactored_in(items, scratch);
        scratch.clear_and_bound();
        ok
    })
}

thread_local! {
    /// The batch check's working vectors, kept between calls on each thread: a
    /// batch of 500 needs ~220 KB, and allocated afresh each time those pages
    /// were handed back to the kernel and faulted in again, zeroed, on the
    /// next batch (docs/BENCHMARKS.md, session 11).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Scratch {
    /// Per signature: its key's place in `keys`, `s` and `k` (its `R`, a
    /// 160-byte point, goes straight into `points`).
    parsed: Vec<(usize, curve25519_dalek::scalar::Scalar, curve25519_dalek::scalar::Scalar)>,
    /// Each distinct key's point and the sum of its coefficients.
    keys: Vec<(curve25519_dalek::edwards::EdwardsPoint, curve25519_dalek::scalar::Scalar)>,
    scalars: Vec<curve25519_dalek::scalar::Scalar>,
    points: Vec<curve25519_dalek::edwards::EdwardsPoint>,
}

impl Scratch {
    /// Empties the vectors; keeps their room unless a batch larger than a
    /// gossiped one (512) or a bench client's (500) grew them: ~460 KB per
    /// thread at most, for as long as the thread lives.
    fn clear_and_bound(&mut self) {
        const KEPT_MAX: usize = 1024;
        self.parsed.clear();
        self.keys.clear();
        self.scalars.clear();
        self.points.clear();
        self.parsed.shrink_to(KEPT_MAX);
        self.keys.shrink_to(KEPT_MAX);
        self.scalars.shrink_to(KEPT_MAX);
        self.points.shrink_to(KEPT_MAX);
    }
}

fn verify_cofactored_in(items: &[(&PublicKey, Message<'_>, &Signature)], scratch: &mut Scratch) -> bool {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use sha2::{Digest, Sha512};

    let Scratch { parsed, keys, scalars, points } = scratch;
    let mut transcript = Sha512::new();
    transcript.update(b"annal/ed25519-batch/v1");
    // Per distinct key, the sum of its coefficients: one point per key, not per signature.
    let mut key_at: std::collections::BTreeMap<[u8; 32], usize> = std::collections::BTreeMap::new();
    parsed.reserve(items.len());
    points.reserve(items.len());
    for (key, message, signature) in items {
        let (r_bytes, s_bytes): ([u8; 32], [u8; 32]) =
            (signature.0[..32].try_into().expect("32 bytes"), signature.0[32..].try_into().expect("32 bytes"));
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else { return false };
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else { return false };
        let at = match key_at.entry(key.0) {
            std::collections::btree_map::Entry::Occupied(at) => *at.get(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let Some(a) = decompressed_key(&key.0) else { return false };
                keys.push((a, Scalar::ZERO));
                *slot.insert(keys.len() - 1)
            }
        };
        let k = challenge(&r_bytes, &key.0, *message);
        transcript.update(r_bytes);
        transcript.update(key.0);
        transcript.update(k.as_bytes());
        transcript.update(s_bytes);
        parsed.push((at, s, k));
        points.push(r);
    }
    let seed = transcript.finalize();
    let mut b_coefficient = Scalar::ZERO;
    scalars.reserve(parsed.len() + keys.len() + 1);
    points.reserve(keys.len() + 1);
    // Coefficients four at a time: one SHA-512 of the seed and a counter gives
    // 64 bytes, four 128-bit coefficients (one hash per signature was one
    // SHA-512 block in seven of a record's check; docs/BENCHMARKS.md, session 19).
    let mut coefficients = [0u8; 64];
    for (i, (at, s, k)) in parsed.iter().enumerate() {
        // A single signature needs no random coefficient; in a batch each gets a 128-bit one.
        let z = if items.len() == 1 {
            Scalar::ONE
        } else {
            if i % 4 == 0 {
                let counter = (i as u64 / 4).to_le_bytes();
                coefficients = Sha512::new().chain_update(seed).chain_update(counter).finalize().into();
            }
            let at = (i % 4) * 16;
            Scalar::from(u128::from_le_bytes(coefficients[at..at + 16].try_into().expect("16 bytes")))
        };
        b_coefficient += z * s;
        scalars.push(z);
        keys[*at].1 += z * k;
    }
    for (a, coefficient) in keys.iter() {
        scalars.push(*coefficient);
        points.push(*a);
    }
    scalars.push(-b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars.iter(), points.iter()).mul_by_cofactor().is_identity()
}

/// Ed25519's challenge k = SHA-512(R ‖ A ‖ M) mod ℓ.
fn challenge(r: &[u8; 32], key: &[u8; 32], message: Message<'_>) -> curve25519_dalek::scalar::Scalar {
    use sha2::{Digest, Sha512};
    let [a, b, c] = message.0;
    let wide: [u8; 64] = Sha512::new()
        .chain_update(r)
        .chain_update(key)
        .chain_update(a)
        .chain_update(b)
        .chain_update(c)
        .finalize()
        .into();
    curve25519_dalek::scalar::Scalar::from_bytes_mod_order_wide(&wide)
}

/// A submitter key as a curve point, from a process-wide cache: the same
/// few thousand agency keys sign everything, and decoding one costs about a
/// tenth of a signature check. Only what is computed is cached, never an
/// answer, so the cache cannot change any verdict.
fn decompressed_key(key: &[u8; 32]) -> Option<curve25519_dalek::edwards::EdwardsPoint> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    const KEYS_CACHED_MAX: usize = 1 << 16;
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], curve25519_dalek::edwards::EdwardsPoint>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(point) = cache.lock().expect("key cache lock").get(key) {
        return Some(*point);
    }
    let point = curve25519_dalek::edwards::CompressedEdwardsY(*key).decompress()?;
    let mut cache = cache.lock().expect("key cache lock");
    if cache.len() >= KEYS_CACHED_MAX {
        cache.clear();
    }
    cache.insert(*key, point);
    Some(point)
}

/// Decodes exactly `N` bytes of hex.
pub fn hex_array<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], Error> {
    let bad = |detail: String| Error::BadHex { what, want: 2 * N, detail };
    if s.len() != 2 * N {
        return Err(bad(format!("{} characters", s.len())));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| bad(e.to_string()))?;
    Ok(out)
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A secret ed25519 key. Its bytes never reach a log: `Debug` prints only the public key.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("the OS random source is available");
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// A key from a 32-byte seed (tests and deterministic fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, domain: Domain, chain_id: &str, bytes: &[u8]) -> Signature {
        Signature(self.0.sign(&signing_message(domain, chain_id, bytes)).to_bytes())
    }

    /// The C2SP note signature over a checkpoint: a validator's finality vote.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> Signature {
        Signature(self.0.sign(checkpoint.to_text().as_bytes()).to_bytes())
    }

    /// The 32-byte seed, for writing a key file and for deriving a libp2p identity.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Writes the key as JSON, readable only by its owner (mode 0600).
    pub fn write_file(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file = KeyFile { kind: "ed25519".into(), public_key: self.public(), secret_key: hex::encode(self.seed()) };
        let json = serde_json::to_string_pretty(&file).expect("a key file serialises");
        let key_err = |e: std::io::Error| Error::KeyFile { path: path.display().to_string(), detail: e.to_string() };
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(key_err)?;
        f.write_all(json.as_bytes()).and_then(|()| f.write_all(b"\n")).map_err(key_err)?;
        f.sync_all().map_err(key_err)
    }

    /// Reads a key file, refusing one that others may read or that does not match its public key.
    pub fn read_file(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::PermissionsExt;
        let err = |detail: String| Error::KeyFile { path: path.display().to_string(), detail };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!("mode is {mode:04o}; a key file must be readable by its owner only (chmod 600)")));
        }
        if meta.len() > 4096 {
            return Err(err(format!("{} bytes is too large for a key file", meta.len())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if file.kind != "ed25519" {
            return Err(err(format!("key type {:?} is not supported (only ed25519)", file.kind)));
        }
        let seed = hex_array::<32>(&file.secret_key, "secret key").map_err(|e| err(e.to_string()))?;
        let key = SecretKey::from_seed(seed);
        if key.public() != file.public_key {
            return Err(err("public_key does not match secret_key".into()));
        }
        Ok(key)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    public_key: PublicKey,
    secret_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;

    fn signed(seed: u8, message: &[u8]) -> Item {
        let key = SecretKey::from_seed([seed; 32]);
        let bytes = [&[crate::codec::FORMAT_V1][..], message].concat();
        let signature = key.sign(Domain::Record, "c", &bytes);
        (key.public(), signing_message(Domain::Record, "c", &bytes), signature)
    }

    /// A signature whose R has an order-8 part: s = r + k·a for R = rB + T.
    /// Only its key's owner can make one; `verify_strict` refuses it, the
    /// cofactored rule accepts it.
    fn torsioned(message: &[u8]) -> Item {
        let a = Scalar::from_bytes_mod_order([7; 32]);
        let public = PublicKey((a * ED25519_BASEPOINT_POINT).compress().to_bytes());
        let r = Scalar::from_bytes_mod_order([9; 32]);
        let big_r = (r * ED25519_BASEPOINT_POINT + EIGHT_TORSION[1]).compress().to_bytes();
        let k = challenge(&big_r, &public.0, Message::whole(message));
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r);
        sig[32..].copy_from_slice(s.as_bytes());
        (public, message.to_vec(), Signature(sig))
    }

    type Item = (PublicKey, Vec<u8>, Signature);

    fn as_items(v: &[Item]) -> Vec<(&PublicKey, Message<'_>, &Signature)> {
        v.iter().map(|(k, m, s)| (k, Message::whole(m), s)).collect()
    }

    /// Goal: the batch and each signature alone always agree: ordinary
    /// signatures pass both ways, a wrong one fails both ways wherever it
    /// sits in a batch, and a crafted signature with a small-order part in R
    /// (which ed25519-dalek's strict check and its batch judge differently)
    /// gets one answer alone and in every batch.
    #[test]
    fn one_answer_alone_and_in_any_batch() {
        let good: Vec<_> = (0..12u8).map(|i| signed(i % 4, &[i; 40])).collect();
        assert!(verify_cofactored(&as_items(&good)));
        for item in as_items(&good) {
            assert!(verify_cofactored(&[item]));
        }

        let mut wrong = good[5].clone();
        wrong.2 .0[40] ^= 1;
        assert!(!verify_cofactored(&as_items(std::slice::from_ref(&wrong))));
        let crafted = torsioned(b"a record");
        let key = VerifyingKey::from_bytes(&crafted.0 .0).unwrap();
        let dalek_sig = ed25519_dalek::Signature::from_bytes(&crafted.2 .0);
        assert!(key.verify_strict(&crafted.1, &dalek_sig).is_err(), "dalek's strict check refuses it");
        assert!(verify_cofactored(&as_items(std::slice::from_ref(&crafted))), "the cofactored rule accepts it");
        for at in 0..=good.len() {
            let mut batch = good.clone();
            batch.insert(at, crafted.clone());
            assert!(verify_cofactored(&as_items(&batch)), "accepted alone, so in a batch (position {at})");
            batch[at] = wrong.clone();
            assert!(!verify_cofactored(&as_items(&batch)), "refused alone, so in a batch (position {at})");
        }
    }

    /// Goal: each signature in a batch gets its own coefficient. Two wrong
    /// signatures whose errors cancel (s + d in one, s - d in the other, same
    /// key) would pass if any two coefficients were equal; wherever the pair
    /// sits, the batch is refused.
    #[test]
    fn cancelling_errors_are_caught_at_every_pair_of_positions() {
        let good: Vec<_> = (0..9u8).map(|i| signed(0, &[i; 40])).collect();
        assert!(verify_cofactored(&as_items(&good)));
        let d = Scalar::from(7u64);
        let shifted = |item: &Item, by: Scalar| {
            let mut item = item.clone();
            let s = Scalar::from_canonical_bytes(item.2 .0[32..].try_into().unwrap()).unwrap();
            item.2 .0[32..].copy_from_slice((s + by).as_bytes());
            item
        };
        for i in 0..good.len() {
            for j in i + 1..good.len() {
                let mut batch = good.clone();
                batch[i] = shifted(&good[i], d);
                batch[j] = shifted(&good[j], -d);
                assert!(
                    !verify_cofactored(&as_items(&batch)),
                    "errors at {i} and {j} cancel only with equal coefficients"
                );
            }
        }
    }

    /// Goal: a signature is bound to its key, message and domain, and a
    /// non-canonical s (s + group order) is refused.
    #[test]
    fn bound_to_key_message_and_canonical_s() {
        let (key, message, signature) = signed(1, b"payload");
        assert!(verify_cofactored(&[(&key, Message::whole(&message), &signature)]));
        // The same bytes in other pieces: the same message.
        let (tag, rest) = message.split_at(5);
        let (chain, record) = rest.split_at(11);
        assert!(verify_cofactored(&[(&key, Message([tag, chain, record]), &signature)]));
        let (other, _, _) = signed(2, b"payload");
        assert!(!verify_cofactored(&[(&other, Message::whole(&message), &signature)]));
        assert!(!verify_cofactored(&[(&key, Message::whole(b"annal/record/v1c\x01payloae"), &signature)]));
        let s = Scalar::from_canonical_bytes(signature.0[32..].try_into().unwrap()).unwrap();
        // s + l as 256-bit little-endian: the same scalar mod l, but not canonical.
        let l: [u8; 32] = {
            let mut b = [0u8; 32];
            b[..16].copy_from_slice(&0x14def9dea2f79cd65812631a5cf5d3edu128.to_le_bytes());
            b[31] = 0x10;
            b
        };
        let mut sum = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = s.as_bytes()[i] as u16 + l[i] as u16 + carry;
            sum[i] = v as u8;
            carry = v >> 8;
        }
        let mut malleated = signature;
        malleated.0[32..].copy_from_slice(&sum);
        assert!(!verify_cofactored(&[(&key, Message::whole(&message), &malleated)]));
    }
}
