//! A place beside a call for its error, so that the call's success travels in registers.
//!
//! The heap's operations return `Result<_, Error>`, and an `Error` is several words long, so
//! such a result is returned through memory. Where the operation runs in an out-of-line closure
//! (every `GlobalHeap` call does, inside its gate) the caller then reads the result back with
//! wider loads than the callee's stores, which the CPU cannot forward: a stall on every malloc
//! and free. Handing the error to an [`ErrorSlot`] and returning an `Option` of a pointer or
//! of `()` keeps the common answer in a register; the slot is written only on failure.

use core::cell::Cell;

use crate::Error;

/// The error of the call it was handed to, if that call failed.
pub(crate) struct ErrorSlot(Cell<Option<Error>>);

impl ErrorSlot {
    /// An empty slot.
    #[inline(always)]
    pub(crate) const fn new() -> ErrorSlot {
        ErrorSlot(Cell::new(None))
    }

    /// The success of `r`, or `None` with its error kept here.
    #[inline(always)]
    pub(crate) fn keep<T>(&self, r: Result<T, Error>) -> Option<T> {
        match r {
            Ok(t) => Some(t),
            Err(e) => {
                self.0.set(Some(e));
                None
            }
        }
    }

    /// `Ok` of a success, else the error kept; `otherwise` if none was kept (the call that
    /// could have failed did not run).
    #[inline(always)]
    pub(crate) fn result<T>(
        &self,
        r: Option<T>,
        otherwise: impl FnOnce() -> Error,
    ) -> Result<T, Error> {
        match r {
            Some(t) => Ok(t),
            None => Err(self.take(otherwise)),
        }
    }

    /// The error kept, else `otherwise`'s.
    #[cold]
    #[inline(never)]
    fn take(&self, otherwise: impl FnOnce() -> Error) -> Error {
        self.0.take().unwrap_or_else(otherwise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_passes_and_a_failure_is_kept() {
        let slot = ErrorSlot::new();
        assert_eq!(slot.keep(Ok::<u8, Error>(3)), Some(3));
        let e = Error::DoubleFree { addr: 0x40 };
        assert_eq!(slot.keep(Err::<u8, Error>(e.clone())), None);
        assert_eq!(slot.result(None::<u8>, || unreachable!()), Err(e));
        // Taken: a second failure without a kept error is `otherwise`'s.
        let other = Error::DoubleFree { addr: 0x80 };
        assert_eq!(slot.result(None::<u8>, || other.clone()), Err(other));
        assert_eq!(slot.result(Some(5u8), || unreachable!()), Ok(5));
    }
}
