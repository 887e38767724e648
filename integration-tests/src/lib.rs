//! Conformance suite and end-to-end test support for Sundial.
