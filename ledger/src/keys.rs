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
    let tag = domain.tag();
    assert_eq!(bytes.first(), Some(&crate::codec::FORMAT_V1), "every signed payload starts with the format byte");
    let mut msg = Vec::with_capacity(tag.len() + chain_id.len() + bytes.len());
    msg.extend_from_slice(tag);
    msg.extend_from_slice(chain_id.as_bytes());
    msg.extend_from_slice(bytes);
    msg
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

    /// Checks `signature` over `signing_message(domain, chain_id, bytes)`.
    pub fn verify(&self, domain: Domain, chain_id: &str, bytes: &[u8], signature: &Signature) -> bool {
        self.verify_raw(&signing_message(domain, chain_id, bytes), signature)
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
