//! The memory-source layer: where the engine's spans and the mapped large blocks come from.
//!
//! [`map`] maps the memory of an engine's start map; [`large`] keeps the table of blocks that
//! have a mapping of their own, and [`spares`] the freed ones kept mapped for reuse; [`span`] is one reservation with the engine over it and its
//! metadata beside it; [`remote`] is the bitmap of frees made by other threads. They use the
//! os layer for memory and the engine for blocks, and know nothing of the façade above them.

pub(crate) mod large;
pub(crate) mod map;
#[allow(dead_code)] // for frees from other threads: not wired into a heap yet
pub(crate) mod remote;
#[allow(dead_code)] // a heap over several spans: not wired into a heap yet
pub(crate) mod span;
pub(crate) mod spares;
