//! The os layer: the only code that calls the operating system.
//!
//! [`region`] reserves, commits, releases and remaps address space and tells the page size;
//! [`abort`] writes the one-line misuse report to stderr and aborts. Nothing here knows about
//! blocks.

pub(crate) mod abort;
pub(crate) mod region;
