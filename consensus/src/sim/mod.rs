//! The deterministic simulator: one seed drives the network, the faults and the Byzantine validators.
