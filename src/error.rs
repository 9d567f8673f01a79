//! The one error type of the crate.
//!
//! Every fallible operation of every allocator returns [`Error`]. Each variant carries what the
//! caller needs to act on it (the size asked for, the address handed back, what was wrong), and
//! its `Display` is one plain sentence, so `eprintln!("{err}")` is a usable report.
//!
//! Addresses are stored as `usize` rather than pointers so that an `Error` is `Send + Sync`,
//! can be compared in tests and can outlive the memory it talks about.

use core::fmt;

/// What went wrong in an allocator call.
///
/// The variants named in the crate's contract (`OutOfMemory`, `InvalidLayout`, `DoubleFree`,
/// `InvalidPointer`, `Corrupted`) are stable; more may be added, so matches need a `_` arm.
///
/// # Example
///
/// ```
/// use strata_alloc::{Arena, Error};
///
/// let arena = Arena::new()?;
/// let p = arena.alloc(64)?;
/// // SAFETY: `p` came from this arena and is freed once here.
/// unsafe { arena.free(p)? };
/// // The second free is caught before anything is written.
/// // SAFETY: freeing twice is exactly the misuse being demonstrated; the arena validates it.
/// let err = unsafe { arena.free(p) }.unwrap_err();
/// assert!(matches!(err, Error::DoubleFree { .. }));
/// println!("{err}");
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No block of the requested size could be found or made.
    OutOfMemory {
        /// Bytes the caller asked for.
        requested: usize,
        /// Largest request that could have been served at the time (0 if unknown).
        available: usize,
    },
    /// The size or alignment cannot be served by any allocator (zero where zero is not allowed,
    /// an alignment that is not a power of two or is too large, a size that overflows).
    InvalidLayout {
        /// Size asked for (for `calloc`, the element count times the size, saturated).
        size: usize,
        /// Alignment asked for.
        align: usize,
        /// Which rule the layout broke.
        reason: &'static str,
    },
    /// The pointer was allocated here once but has been freed already and not handed out again.
    DoubleFree {
        /// The address handed back.
        addr: usize,
    },
    /// The pointer was never handed out by this allocator: it lies outside it, points into the
    /// middle of a block, or is misaligned.
    InvalidPointer {
        /// The address handed back.
        addr: usize,
        /// Why the address was rejected.
        reason: &'static str,
    },
    /// The allocator's own metadata was found damaged (typically a header overwritten by a
    /// buffer overflow). Nothing was followed or written through the damaged data.
    Corrupted {
        /// Address of the damaged metadata (a block header, a free-list link).
        addr: usize,
        /// What was found wrong.
        what: &'static str,
    },
    /// The operating system refused to map, remap or protect memory.
    Os {
        /// What the allocator was doing.
        op: &'static str,
        /// Bytes involved.
        bytes: usize,
        /// The raw OS error code (`errno`), or 0 if none was reported.
        code: i32,
    },
}

impl Error {
    /// A short, stable name for the kind of error, used in abort messages and logs.
    ///
    /// ```
    /// use strata_alloc::Error;
    /// assert_eq!(Error::DoubleFree { addr: 0x10 }.kind(), "double free");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::OutOfMemory { .. } => "out of memory",
            Error::InvalidLayout { .. } => "invalid layout",
            Error::DoubleFree { .. } => "double free",
            Error::InvalidPointer { .. } => "invalid pointer",
            Error::Corrupted { .. } => "heap corruption",
            Error::Os { .. } => "operating system error",
        }
    }

    /// Whether this error reports a misuse by the caller or damaged metadata (as opposed to
    /// running out of memory or being refused by the OS).
    ///
    /// ```
    /// use strata_alloc::Error;
    /// assert!(Error::DoubleFree { addr: 0x10 }.is_misuse());
    /// assert!(!Error::OutOfMemory { requested: 8, available: 0 }.is_misuse());
    /// ```
    pub fn is_misuse(&self) -> bool {
        matches!(
            self,
            Error::DoubleFree { .. } | Error::InvalidPointer { .. } | Error::Corrupted { .. }
        )
    }

    pub(crate) fn layout(size: usize, align: usize, reason: &'static str) -> Error {
        Error::InvalidLayout {
            size,
            align,
            reason,
        }
    }

    pub(crate) fn oom(requested: usize, available: usize) -> Error {
        Error::OutOfMemory {
            requested,
            available,
        }
    }

    pub(crate) fn os(op: &'static str, bytes: usize, err: &std::io::Error) -> Error {
        Error::Os {
            op,
            bytes,
            code: err.raw_os_error().unwrap_or(0),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::OutOfMemory {
                requested,
                available,
            } => write!(
                f,
                "out of memory: {requested} bytes were requested but at most {available} could be served"
            ),
            Error::InvalidLayout {
                size,
                align,
                reason,
            } => write!(
                f,
                "invalid layout of {size} bytes aligned to {align}: {reason}"
            ),
            Error::DoubleFree { addr } => {
                write!(f, "double free of {addr:#x}: the block was already freed")
            }
            Error::InvalidPointer { addr, reason } => {
                write!(f, "invalid pointer {addr:#x}: {reason}")
            }
            Error::Corrupted { addr, what } => {
                write!(f, "heap corruption at {addr:#x}: {what}")
            }
            Error::Os { op, bytes, code } => {
                write!(f, "the OS refused to {op} {bytes} bytes (errno {code})")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for allocator_api2::alloc::AllocError {
    fn from(_: Error) -> Self {
        allocator_api2::alloc::AllocError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_sentence_with_the_facts() {
        let cases = [
            (Error::oom(4096, 100), "4096"),
            (
                Error::layout(8, 3, "alignment is not a power of two"),
                "power of two",
            ),
            (Error::DoubleFree { addr: 0x1000 }, "0x1000"),
            (
                Error::InvalidPointer {
                    addr: 0xdead0,
                    reason: "not inside this allocator",
                },
                "0xdead0",
            ),
            (
                Error::Corrupted {
                    addr: 0x20,
                    what: "block size does not end on a block boundary",
                },
                "0x20",
            ),
        ];
        for (err, needle) in cases {
            let text = err.to_string();
            assert!(text.contains(needle), "{text:?} should mention {needle}");
            assert!(!text.contains('\n'), "{text:?} should be one line");
            assert!(
                text.starts_with(err.kind()),
                "{text:?} should start with its kind"
            );
        }
    }
}
