//! SyncML codec (being written).
