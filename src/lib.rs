//! Sundial: job scheduling for Rust.

pub use sundial_core::*;
