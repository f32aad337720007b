//! Sans-IO Simplex BFT core and the deterministic simulator that attacks it.
