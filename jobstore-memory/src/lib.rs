//! In-memory job store.
