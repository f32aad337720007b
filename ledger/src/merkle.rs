//! The RFC 6962 Merkle log: hashing, roots, inclusion and consistency proofs.
