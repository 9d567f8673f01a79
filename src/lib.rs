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

pub use abort::{abort_on_misuse, write_stderr};
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
