//! Runs submitted blocking jobs on a rayon thread pool.
