//! # strata-alloc
//!
//! Region allocators with typed handles: arena speed without giving up `free`, `realloc` and
//! safety checks.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod abort;
mod bump;
mod error;
mod region;
mod stats;
#[cfg(test)]
pub(crate) mod test_rng;

pub use bump::{Bump, BumpBox, Checkpoint, ChunkInfo, Chunks, DEFAULT_RETAINED, MAX_CHUNK};
pub use error::Error;
pub use region::{Region, page_size};
pub use stats::{BlockInfo, BlockState, Stats};
