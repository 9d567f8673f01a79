#![doc = include_str!("../README.md")]
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod abort;
mod api;
mod arena;
pub mod bump;
mod engine;
mod error;
mod heap;
pub mod pool;
mod region;
mod slab;
mod snapshot;
mod stats;
mod sync;
#[cfg(test)]
pub(crate) mod test_rng;
// The fuzz driver (fuzz/src/driver.rs), shared with the unit tests, names the crate as a user
// does.
#[cfg(test)]
extern crate self as strata_alloc;

pub use arena::Arena;
pub use bump::{Bump, BumpBox, Checkpoint};
pub use error::Error;
pub use heap::{Heap, HeapConfig};
pub use pool::{Handle, InsertError, Pool};
pub use region::{Region, page_size};
pub use slab::{SlabPool, SlabSnapshot};
pub use snapshot::{FreeList, Snapshot};
pub use stats::{BlockInfo, BlockState, Stats};
pub use sync::{GlobalHeap, LockedHeap};
