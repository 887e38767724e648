//! Runs submitted async jobs on tokio.
