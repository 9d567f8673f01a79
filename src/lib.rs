//! # strata-alloc
//!
//! Region allocators with typed handles: arena speed without giving up `free`, `realloc` and
//! safety checks.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod abort;
mod error;
mod region;
mod slab;
mod stats;
#[cfg(test)]
pub(crate) mod test_rng;

pub use error::Error;
pub use region::{Region, page_size};
pub use slab::{SlabPool, SlabSnapshot};
pub use stats::{BlockInfo, BlockState, Stats};
