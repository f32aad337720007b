//! The one error type of `annal-consensus`: bad bytes or bad signatures from a peer.

use crate::types::{Height, ValidatorIndex, View};

/// Why a message or certificate from a peer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message has {got} bytes; the limit is {max}")]
    MessageTooLarge { got: usize, max: usize },
    #[error("message ended at byte {at} while reading {field}")]
    Truncated { field: &'static str, at: usize },
    #[error("message has {extra} trailing bytes after a complete {kind}")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("unknown message tag {tag}")]
    UnknownTag { tag: u8 },
    #[error("block payload has {got} bytes; the limit is {max}")]
    PayloadTooLarge { got: usize, max: usize },
    #[error("field {field} is not in canonical form")]
    NonCanonical { field: &'static str },
    #[error("signer {signer:?} is out of range for a set of {validators} validators")]
    SignerOutOfRange { signer: ValidatorIndex, validators: usize },
    #[error("signer bitmap has {got} bytes; a set of {validators} validators needs {want}")]
    BitmapLength { got: usize, want: usize, validators: usize },
    #[error("certificate has {got} signatures but its bitmap names {want} signers")]
    SignatureCount { got: usize, want: usize },
    #[error("signature of {signer:?} on {kind} for view {view:?} does not verify")]
    BadSignature { signer: ValidatorIndex, kind: &'static str, view: View },
    #[error("certificate for view {view:?} height {height:?} has {power} of {total} voting power; more than 2/3 is required")]
    QuorumNotReached { view: View, height: Height, power: u64, total: u64 },
    #[error("safety state has {got} bytes; it needs {want}")]
    SafetyStateLength { got: usize, want: usize },
    #[error("safety state's justification is a {kind} certificate for view {view:?} height {height:?}; its last finalize is in view {finalized:?}")]
    SafetyStateJustification { kind: &'static str, view: View, height: Height, finalized: View },
}
