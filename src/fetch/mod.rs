//! See the crate-level layout map.
