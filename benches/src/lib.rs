//! Shared helpers for the strata-alloc benchmarks.
