//! Conformance suite and end-to-end test support for Sundial.
//!
//! [`conformance::cases`] lists every `JobStore` behaviour case and
//! [`support::stores`] every store; `tests/conformance.rs` runs their cross product.

pub mod conformance;
pub mod faults;
pub mod support;
