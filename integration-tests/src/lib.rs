//! Conformance suite and end-to-end test support for Sundial.
//!
//! [`conformance::cases`] lists every `JobStore` behaviour case and
//! [`support::stores`] every store; `tests/conformance.rs` runs their cross product.
//! [`executor_conformance`] holds the `Executor` contract's cases, which
//! `tests/executors.rs` runs for every executor.

pub mod conformance;
pub mod executor_conformance;
pub mod faults;
pub mod support;
