//! [`Pool<T>`]: values in slots, reached through small copyable [`Handle<T>`]s, and
//! [`SecondaryMap`]s keyed by the same handles.
//!
//! ```
//! use strata_alloc::{Handle, Pool, SecondaryMap};
//!
//! struct Node {
//!     edges: Vec<Handle<Node>>, // handles, not references: no borrow ties the nodes together
//! }
//! let mut nodes = Pool::new();
//! let mut labels = SecondaryMap::new();
//! let a = nodes.insert(Node { edges: vec![] });
//! let b = nodes.insert(Node { edges: vec![a] });
//! labels.insert(b, "b");
//! nodes.remove(a);
//! assert!(nodes[b].edges.iter().all(|&e| nodes.get(e).is_none())); // a's handle is stale
//! assert_eq!(labels[b], "b");
//! ```
//!
//! # How it works
//!
//! A pool is a vector of slots. Each slot holds either a value or, while vacant, the index of
//! the next vacant slot (a free list threaded through the slots themselves), and beside it a
//! 32-bit generation. A [`Handle<T>`] is a slot index plus the generation the slot had when the
//! value went in; it reaches the value only while the slot still has that generation.
//!
//! # Invariants
//!
//! These are kept by every `&mut self` method and checked by [`Pool::check`]:
//!
//! - A slot's generation is **odd** exactly when the slot holds a value (`body.value` is
//!   initialised). Handles are only ever made from occupied slots, so every handle's generation
//!   is odd, and `slot.generation == handle.generation` alone proves the slot is occupied by the
//!   value the handle was made for: one comparison on the hot path.
//! - A slot's generation only ever goes up: +1 when a value goes in, +1 when it comes out. So a
//!   generation is never seen twice in one slot, and a stale handle can never match again.
//! - The one exception would be the wrap from `u32::MAX` (odd, occupied) to 0. Instead, a slot
//!   vacated at generation `u32::MAX` is **retired**: its generation becomes 0 and it is never put
//!   on the free list, so it is never reused. (slotmap and thunderdome let the generation wrap,
//!   which lets a very old handle reach a new value; here that cannot happen.) A slot can be
//!   reused 2^31 times before it retires, so retirement costs one slot per 2^31 reuses.
//! - A vacant slot with a nonzero (even) generation is on the free list exactly once;
//!   `body.next_free` links to the next one, `NO_SLOT` ends the list. Retired slots are on no
//!   list. `len` counts occupied slots and `retired` counts retired ones.
//! - Every method that takes values out (`remove`, `retain`, `clear`, `drain`, drop) first marks
//!   the slot vacant and only then drops or hands out the value. A panicking `Drop` or predicate
//!   therefore leaves a consistent pool in which no value can be dropped twice.
//!
//! # Allocation failure
//!
//! [`Pool::insert`] and [`Pool::reserve`] behave like `Vec::push` and `Vec::reserve`: they panic
//! on capacity overflow and call `handle_alloc_error` when the allocator refuses. Code that must
//! survive a refusal uses [`Pool::try_insert`] (which hands the value back inside the error) and
//! [`Pool::try_reserve`].

use core::cmp::Ordering;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::iter::FusedIterator;
use core::marker::PhantomData;
use core::mem::{self, ManuallyDrop};
use core::num::NonZeroU32;
use core::ops::{Index, IndexMut};

use allocator_api2::alloc::{Allocator, Global, Layout};
use allocator_api2::vec::Vec;
use static_assertions::{assert_eq_size, assert_impl_all};

use crate::error::Error;

pub mod secondary;
pub use secondary::SecondaryMap;

/// Ends the free list. It is also an index no slot can have, because a pool holds at most
/// [`MAX_SLOTS`] slots, so `slots.get(NO_SLOT)` is always `None`.
const NO_SLOT: u32 = u32::MAX;

/// Slot indices are `u32` and `u32::MAX` is reserved for [`NO_SLOT`].
const MAX_SLOTS: usize = u32::MAX as usize;

/// A key to one value in a [`Pool<T>`]: a slot index and the slot's generation.
///
/// A handle is 8 bytes, and so is `Option<Handle<T>>`. It is `Copy`, `Eq`, `Ord`, `Hash` and
/// `Debug` whatever `T` is, and `Send + Sync` even when `T` is not (a handle holds no `T`, only
/// the right to ask the pool for one). Once its value is removed, or the pool cleared, the handle
/// is stale forever: it never reaches a value inserted later.
///
/// A handle is only meaningful for the pool that made it; given to another pool it reaches
/// whatever that pool has at the same index and generation, or nothing.
///
/// # Example
///
/// ```
/// use strata_alloc::{Handle, Pool};
///
/// let mut names: Pool<&str> = Pool::new();
/// let a: Handle<&str> = names.insert("ada");
/// let b = names.insert("grace");
/// assert_ne!(a, b);
/// assert_eq!(names[a], "ada");
/// assert_eq!(core::mem::size_of::<Option<Handle<&str>>>(), 8);
/// ```
pub struct Handle<T> {
    index: u32,
    generation: NonZeroU32,
    // `fn() -> T` keeps the type tied to `T` without owning one: no drop check, and Send + Sync
    // and every derived-looking trait regardless of `T`.
    _marker: PhantomData<fn() -> T>,
}

assert_eq_size!(Handle<u8>, u64);
assert_eq_size!(Option<Handle<u8>>, u64);
assert_eq_size!(Option<Handle<String>>, u64);
assert_impl_all!(Handle<*const u8>: Send, Sync, Copy, Unpin);
assert_impl_all!(Pool<u64>: Send, Sync);

impl<T> Handle<T> {
    /// Makes the handle of an occupied slot.
    #[inline(always)]
    fn new(index: u32, generation: u32) -> Handle<T> {
        debug_assert!(
            generation & 1 == 1,
            "handles are made from occupied slots only"
        );
        Handle {
            index,
            // SAFETY: only occupied slots make handles and their generation is odd (module
            // invariants), so it is not zero.
            generation: unsafe { NonZeroU32::new_unchecked(generation) },
            _marker: PhantomData,
        }
    }

    /// The slot index, for logging and debugging.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert('x');
    /// assert_eq!(h.index(), 0);
    /// ```
    #[inline]
    pub fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation when the value went in, for logging and debugging. It is always
    /// odd.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let first = pool.insert('x');
    /// pool.remove(first);
    /// let second = pool.insert('y');
    /// assert_eq!(first.index(), second.index());
    /// assert!(second.generation() > first.generation());
    /// ```
    #[inline]
    pub fn generation(self) -> NonZeroU32 {
        self.generation
    }

    /// Index and generation packed in one integer, for hashing and ordering.
    #[inline(always)]
    fn bits(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation.get())
    }
}

// Implemented by hand, not derived: a derive would demand `T: Clone` (and so on) for no reason.
impl<T> Clone for Handle<T> {
    #[inline]
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl<T> PartialEq for Handle<T> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.bits() == other.bits()
    }
}

impl<T> Eq for Handle<T> {}

impl<T> PartialOrd for Handle<T> {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Handles order by slot index, then generation.
impl<T> Ord for Handle<T> {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.bits().cmp(&other.bits())
    }
}

impl<T> Hash for Handle<T> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bits().hash(state);
    }
}

/// A handle is saved as the pair `(index, generation)`.
#[cfg(feature = "serde")]
impl<T> serde::Serialize for Handle<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&(self.index, self.generation.get()), serializer)
    }
}

/// A loaded handle is checked like one the pool made: its generation must be odd (only
/// occupied slots make handles). Any such handle is safe to use: given to a pool, it reaches
/// the value at that index and generation, or nothing.
#[cfg(feature = "serde")]
impl<'de, T> serde::Deserialize<'de> for Handle<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (index, generation) = <(u32, u32) as serde::Deserialize>::deserialize(deserializer)?;
        if generation & 1 == 0 {
            return Err(<D::Error as serde::de::Error>::custom(
                "a handle's generation is odd (only occupied slots make handles)",
            ));
        }
        Ok(Handle::new(index, generation))
    }
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({}v{})", self.index, self.generation)
    }
}

/// What a slot holds; which field is live is told by the slot's generation (odd: `value`).
union SlotBody<T> {
    value: ManuallyDrop<T>,
    next_free: u32,
}

/// One slot. No `Drop`: the pool drops values itself, so a `Vec<Slot<T>>` can be freed without
/// dropping anything twice.
struct Slot<T> {
    body: SlotBody<T>,
    /// Odd: occupied. Even and nonzero: on the free list. Zero: retired.
    generation: u32,
}

impl<T> Slot<T> {
    #[inline(always)]
    fn is_occupied(&self) -> bool {
        self.generation & 1 == 1
    }

    /// The value, if the slot holds one.
    #[inline(always)]
    fn value(&self) -> Option<&T> {
        if self.is_occupied() {
            // SAFETY: an odd generation means `value` is the initialised field.
            Some(unsafe { &*self.body.value })
        } else {
            None
        }
    }

    #[inline(always)]
    fn value_mut(&mut self) -> Option<&mut T> {
        if self.is_occupied() {
            // SAFETY: an odd generation means `value` is the initialised field.
            Some(unsafe { &mut *self.body.value })
        } else {
            None
        }
    }
}

/// A pool of `T` values reached through [`Handle<T>`]s, storing its slots through allocator `A`.
///
/// `insert`, `get`, `get_mut`, `remove` and `contains` are O(1); iteration visits every slot,
/// vacant ones included (it stops early once all values are seen). Vacated slots are reused
/// last-freed first, which keeps recently touched memory hot.
///
/// # Example
///
/// ```
/// use strata_alloc::Pool;
///
/// let mut pool = Pool::new();
/// let a = pool.insert(String::from("a"));
/// let b = pool.insert(String::from("b"));
/// pool[b].push('!');
/// assert_eq!(pool.remove(a).as_deref(), Some("a"));
/// assert_eq!(pool.get(a), None); // stale from now on
/// assert_eq!(pool.get(b).map(String::as_str), Some("b!"));
/// assert_eq!(pool.len(), 1);
/// ```
///
/// With another allocator:
///
/// ```
/// use strata_alloc::Pool;
///
/// let bump = bumpalo::Bump::new();
/// let mut pool = Pool::new_in(&bump);
/// let h = pool.insert([1u8; 16]);
/// assert_eq!(pool[h][0], 1);
/// ```
pub struct Pool<T, A: Allocator = Global> {
    slots: Vec<Slot<T>, A>,
    /// Head of the free list of vacant, unretired slots, or [`NO_SLOT`].
    free_head: u32,
    /// Occupied slots.
    len: u32,
    /// Slots vacated at generation `u32::MAX`; never reused.
    retired: u32,
}

impl<T> Pool<T> {
    /// An empty pool in the global allocator. It allocates nothing until the first insert.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let pool: Pool<u32> = Pool::new();
    /// assert!(pool.is_empty());
    /// assert_eq!(pool.capacity(), 0);
    /// ```
    pub fn new() -> Pool<T> {
        Pool::new_in(Global)
    }

    /// An empty pool with room for at least `n` values before it reallocates.
    ///
    /// # Panics
    ///
    /// If `n` slots exceed `u32::MAX` slots or `isize::MAX` bytes.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let pool: Pool<u32> = Pool::with_capacity(100);
    /// assert!(pool.capacity() >= 100);
    /// ```
    pub fn with_capacity(n: usize) -> Pool<T> {
        Pool::with_capacity_in(n, Global)
    }
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool::new()
    }
}

impl<T, A: Allocator> Pool<T, A> {
    /// An empty pool storing its slots through `alloc`.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let bump = bumpalo::Bump::new();
    /// let mut pool: Pool<u64, &bumpalo::Bump> = Pool::new_in(&bump);
    /// let h = pool.insert(7);
    /// assert_eq!(pool[h], 7);
    /// ```
    pub fn new_in(alloc: A) -> Pool<T, A> {
        Pool {
            slots: Vec::new_in(alloc),
            free_head: NO_SLOT,
            len: 0,
            retired: 0,
        }
    }

    /// An empty pool storing its slots through `alloc`, with room for at least `n` values.
    ///
    /// # Panics
    ///
    /// If `n` slots exceed `u32::MAX` slots or `isize::MAX` bytes.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let bump = bumpalo::Bump::new();
    /// let pool: Pool<u64, _> = Pool::with_capacity_in(10, &bump);
    /// assert!(pool.capacity() >= 10);
    /// ```
    pub fn with_capacity_in(n: usize, alloc: A) -> Pool<T, A> {
        assert!(
            n <= MAX_SLOTS,
            "Pool capacity overflow: {n} slots exceed u32::MAX"
        );
        Pool {
            slots: Vec::with_capacity_in(n, alloc),
            free_head: NO_SLOT,
            len: 0,
            retired: 0,
        }
    }

    /// The allocator the slots live in.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let bump = bumpalo::Bump::new();
    /// let pool: Pool<u8, _> = Pool::new_in(&bump);
    /// assert!(core::ptr::eq(*pool.allocator(), &bump));
    /// ```
    pub fn allocator(&self) -> &A {
        self.slots.allocator()
    }

    /// How many values the pool holds.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// pool.insert(1);
    /// pool.insert(2);
    /// assert_eq!(pool.len(), 2);
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the pool holds no value.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// assert!(pool.is_empty());
    /// let h = pool.insert(1);
    /// pool.remove(h);
    /// assert!(pool.is_empty());
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many values the pool can hold without reallocating (retired slots do not count).
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool: Pool<u8> = Pool::with_capacity(8);
    /// assert!(pool.capacity() >= 8);
    /// for i in 0..8 { pool.insert(i); }
    /// assert!(pool.capacity() >= pool.len());
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.capacity() - self.retired as usize
    }

    /// Vacant slots that can be reused.
    #[inline]
    fn reusable(&self) -> usize {
        self.slots.len() - self.len as usize - self.retired as usize
    }

    /// How many new slots `additional` more values need, checked against the slot limit.
    fn slots_needed(&self, additional: usize) -> Result<usize, Error> {
        let new_slots = additional.saturating_sub(self.reusable());
        match self.slots.len().checked_add(new_slots) {
            Some(total) if total <= MAX_SLOTS => match Layout::array::<Slot<T>>(total) {
                Ok(_) => Ok(new_slots),
                Err(_) => Err(Error::InvalidLayout {
                    size: total.saturating_mul(mem::size_of::<Slot<T>>()),
                    align: mem::align_of::<Slot<T>>(),
                    reason: "the pool's slots would exceed isize::MAX bytes",
                }),
            },
            _ => Err(Error::OutOfMemory {
                requested: additional,
                available: MAX_SLOTS - self.slots.len() + self.reusable(),
            }),
        }
    }

    /// Makes room for at least `additional` more values without reallocating.
    ///
    /// # Panics
    ///
    /// If the pool would need more than `u32::MAX` slots or `isize::MAX` bytes. If the allocator
    /// refuses, `handle_alloc_error` is called, as `Vec::reserve` does; use
    /// [`try_reserve`](Pool::try_reserve) to get an error instead.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// pool.insert(0u32);
    /// pool.reserve(100);
    /// assert!(pool.capacity() >= 101);
    /// ```
    pub fn reserve(&mut self, additional: usize) {
        match self.slots_needed(additional) {
            Ok(new_slots) => self.slots.reserve(new_slots),
            Err(err) => panic!("Pool::reserve({additional}): {err}"),
        }
    }

    /// Makes room for at least `additional` more values, or says why it cannot. On error the
    /// pool is unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the allocator refuses or the pool would need more than
    /// `u32::MAX` slots (`available` is then how many more values the slot limit allows);
    /// [`Error::InvalidLayout`] if the slots would exceed `isize::MAX` bytes.
    ///
    /// ```
    /// use strata_alloc::{Error, Pool};
    /// let mut pool: Pool<u64> = Pool::new();
    /// pool.try_reserve(10)?;
    /// assert!(pool.capacity() >= 10);
    /// assert!(matches!(pool.try_reserve(usize::MAX), Err(Error::OutOfMemory { .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), Error> {
        let new_slots = self.slots_needed(additional)?;
        self.slots
            .try_reserve(new_slots)
            .map_err(|_| Error::OutOfMemory {
                requested: (self.slots.len() + new_slots) * mem::size_of::<Slot<T>>(),
                available: 0,
            })
    }

    /// Stores `value` and returns its handle.
    ///
    /// # Panics
    ///
    /// If the pool already has `u32::MAX` slots. If the allocator refuses, `handle_alloc_error`
    /// is called, as `Vec::push` does; use [`try_insert`](Pool::try_insert) to get the value
    /// back with an error instead.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert("value");
    /// assert_eq!(pool.get(h), Some(&"value"));
    /// ```
    #[inline]
    pub fn insert(&mut self, value: T) -> Handle<T> {
        self.insert_with(|_| value)
    }

    /// Stores the value `f` makes from its own handle, for values that refer to themselves.
    /// If `f` panics, the pool is unchanged.
    ///
    /// # Panics
    ///
    /// As [`insert`](Pool::insert).
    ///
    /// ```
    /// use strata_alloc::{Handle, Pool};
    /// struct Node { me: Handle<Node> }
    /// let mut pool = Pool::new();
    /// let h = pool.insert_with(|me| Node { me });
    /// assert_eq!(pool[h].me, h);
    /// ```
    #[inline]
    pub fn insert_with(&mut self, f: impl FnOnce(Handle<T>) -> T) -> Handle<T> {
        let free = self.free_head;
        if let Some(slot) = self.slots.get_mut(free as usize) {
            // On the free list, so vacant: even, nonzero, not u32::MAX. Adding one cannot wrap.
            let generation = slot.generation + 1;
            let handle = Handle::new(free, generation);
            let value = f(handle);
            // SAFETY: the slot is on the free list, so it is vacant and `next_free` is the
            // initialised field.
            self.free_head = unsafe { slot.body.next_free };
            slot.body.value = ManuallyDrop::new(value);
            slot.generation = generation;
            self.len += 1;
            return handle;
        }
        self.push_slot(f)
    }

    /// Appends a new slot for the value `f` makes (the free list is empty).
    #[inline]
    fn push_slot(&mut self, f: impl FnOnce(Handle<T>) -> T) -> Handle<T> {
        let index = self.slots.len();
        if index >= MAX_SLOTS {
            full();
        }
        if index == self.slots.capacity() {
            self.grow_one();
        }
        let handle = Handle::new(index as u32, 1);
        let slot = Slot {
            body: SlotBody {
                value: ManuallyDrop::new(f(handle)),
            },
            generation: 1,
        };
        // SAFETY: `index == len < capacity` (grown above), so the write lands in the spare
        // capacity and the new length covers only initialised slots. A panic in `f` happens
        // before anything is written, leaving the pool as it was.
        unsafe {
            self.slots.as_mut_ptr().add(index).write(slot);
            self.slots.set_len(index + 1);
        }
        self.len += 1;
        handle
    }

    /// Grows the slots for one more push. Kept out of line: `Vec::push` of allocator-api2
    /// inlines its whole growth path into every push, which makes the common push slower
    /// (docs/BENCHMARKS.md).
    #[cold]
    #[inline(never)]
    fn grow_one(&mut self) {
        self.slots.reserve(1);
    }

    /// Stores `value` and returns its handle, or gives the value back if no slot can be had.
    /// On error the pool is unchanged.
    ///
    /// # Errors
    ///
    /// [`InsertError`] holding the value and an [`Error::OutOfMemory`] if the allocator refused
    /// to grow the slots or the pool already has `u32::MAX` slots, or an
    /// [`Error::InvalidLayout`] if the slots would exceed `isize::MAX` bytes.
    ///
    /// ```
    /// use strata_alloc::{Error, Pool};
    /// let bump = bumpalo::Bump::new();
    /// bump.set_allocation_limit(Some(0)); // an allocator that refuses
    /// let mut pool = Pool::new_in(&bump);
    /// let err = pool.try_insert(String::from("kept")).unwrap_err();
    /// assert!(matches!(err.error(), Error::OutOfMemory { .. }));
    /// assert_eq!(err.into_value(), "kept"); // nothing lost
    /// assert!(pool.is_empty());
    /// ```
    pub fn try_insert(&mut self, value: T) -> Result<Handle<T>, InsertError<T>> {
        // With no free slot, `try_reserve(1)` checks the slot limit and grows if needed (a
        // no-op within capacity).
        if self.free_head == NO_SLOT {
            if let Err(error) = self.try_reserve(1) {
                return Err(InsertError { value, error });
            }
        }
        Ok(self.insert(value))
    }

    /// The value behind `handle`, or `None` if the handle is stale.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert(5);
    /// assert_eq!(pool.get(h), Some(&5));
    /// pool.remove(h);
    /// assert_eq!(pool.get(h), None);
    /// ```
    #[inline]
    pub fn get(&self, handle: Handle<T>) -> Option<&T> {
        match self.slots.get(handle.index as usize) {
            // SAFETY: handle generations are odd, so an equal generation means occupied.
            Some(slot) if slot.generation == handle.generation.get() => {
                Some(unsafe { &*slot.body.value })
            }
            _ => None,
        }
    }

    /// The value behind `handle`, mutably, or `None` if the handle is stale.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert(5);
    /// *pool.get_mut(h).unwrap() += 1;
    /// assert_eq!(pool[h], 6);
    /// ```
    #[inline]
    pub fn get_mut(&mut self, handle: Handle<T>) -> Option<&mut T> {
        match self.slots.get_mut(handle.index as usize) {
            // SAFETY: handle generations are odd, so an equal generation means occupied.
            Some(slot) if slot.generation == handle.generation.get() => {
                Some(unsafe { &mut *slot.body.value })
            }
            _ => None,
        }
    }

    /// Whether `handle` still reaches a value.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert(());
    /// assert!(pool.contains(h));
    /// pool.clear();
    /// assert!(!pool.contains(h));
    /// ```
    #[inline]
    pub fn contains(&self, handle: Handle<T>) -> bool {
        matches!(self.slots.get(handle.index as usize),
                 Some(slot) if slot.generation == handle.generation.get())
    }

    /// Takes the value behind `handle` out of the pool, or returns `None` if the handle is
    /// stale. The handle, and every copy of it, is stale from now on.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert(String::from("x"));
    /// assert_eq!(pool.remove(h).as_deref(), Some("x"));
    /// assert_eq!(pool.remove(h), None);
    /// ```
    #[inline]
    pub fn remove(&mut self, handle: Handle<T>) -> Option<T> {
        let index = handle.index as usize;
        match self.slots.get(index) {
            Some(slot) if slot.generation == handle.generation.get() => {
                // SAFETY: an equal (odd) generation means the slot is occupied.
                Some(unsafe { self.vacate(index) })
            }
            _ => None,
        }
    }

    /// Moves the value out of slot `index`, marks the slot vacant with the next generation (or
    /// retires it if that would wrap) and puts it on the free list.
    ///
    /// # Safety
    ///
    /// `index` is in bounds and the slot is occupied.
    #[inline(always)]
    unsafe fn vacate(&mut self, index: usize) -> T {
        // SAFETY: the caller guarantees `index` is in bounds.
        let slot = unsafe { self.slots.get_unchecked_mut(index) };
        // SAFETY: the caller guarantees the slot is occupied; the slot is marked vacant below
        // before anyone can read the value again.
        let value = unsafe { ManuallyDrop::take(&mut slot.body.value) };
        // Occupied means odd, so this is even; it is 0 only when leaving u32::MAX.
        let generation = slot.generation.wrapping_add(1);
        slot.generation = generation;
        self.len -= 1;
        // Branch-free so the hot path carries no trace of the rare retirement: the link is
        // written even when retiring (a retired slot's link is never read), and a retired slot
        // leaves the free-list head where it was.
        let retiring = generation == 0;
        slot.body.next_free = self.free_head;
        self.free_head = if retiring {
            self.free_head
        } else {
            index as u32
        };
        if retiring {
            self.retired += 1;
        }
        value
    }

    /// Mutable references to the values behind `N` handles at once, or `None` if any handle is
    /// stale or two of them are the same.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let a = pool.insert(1);
    /// let b = pool.insert(2);
    /// if let Some([x, y]) = pool.get_disjoint_mut([a, b]) {
    ///     core::mem::swap(x, y);
    /// }
    /// assert_eq!((pool[a], pool[b]), (2, 1));
    /// assert!(pool.get_disjoint_mut([a, a]).is_none());
    /// ```
    pub fn get_disjoint_mut<const N: usize>(
        &mut self,
        handles: [Handle<T>; N],
    ) -> Option<[&mut T; N]> {
        for (i, &handle) in handles.iter().enumerate() {
            // Two live handles with one index have one generation, so comparing indices is
            // enough to find duplicates, and catches them before any reference exists.
            if !self.contains(handle) || handles[..i].iter().any(|h| h.index == handle.index) {
                return None;
            }
        }
        let base = self.slots.as_mut_ptr();
        Some(core::array::from_fn(|i| {
            // SAFETY: every index was checked in bounds and occupied above, and the indices are
            // pairwise distinct, so these are `N` non-overlapping borrows of slots owned by
            // `self`, which stays mutably borrowed for their lifetime.
            unsafe { &mut *(*base.add(handles[i].index as usize)).body.value }
        }))
    }

    /// Keeps the values for which `keep` returns `true` and drops the others, visiting each
    /// value once in slot order.
    ///
    /// If `keep` or a value's `Drop` panics, the values already removed stay removed, the rest
    /// stay in the pool, and nothing is dropped twice.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let handles: Vec<_> = (0..10).map(|i| pool.insert(i)).collect();
    /// pool.retain(|_, v| *v % 2 == 0);
    /// assert_eq!(pool.len(), 5);
    /// assert!(!pool.contains(handles[1]));
    /// assert_eq!(pool[handles[4]], 4);
    /// ```
    pub fn retain(&mut self, mut keep: impl FnMut(Handle<T>, &mut T) -> bool) {
        let mut left = self.len;
        let mut index = 0;
        while left > 0 {
            let slot = &mut self.slots[index];
            let generation = slot.generation;
            if let Some(value) = slot.value_mut() {
                left -= 1;
                if !keep(Handle::new(index as u32, generation), value) {
                    // SAFETY: the slot was occupied and `keep` only had the value, not the
                    // pool, so it still is. The value is dropped after the slot is vacated.
                    drop(unsafe { self.vacate(index) });
                }
            }
            index += 1;
        }
    }

    /// Drops every value. Every handle given out so far becomes stale; the memory is kept for
    /// reuse.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert(1);
    /// pool.clear();
    /// assert!(pool.is_empty());
    /// let h2 = pool.insert(2);
    /// assert_eq!(pool.get(h), None); // even though h2 reuses its slot
    /// assert_eq!(h.index(), h2.index());
    /// ```
    pub fn clear(&mut self) {
        // Vacating each slot bumps its generation, which is what makes old handles stale; the
        // slots cannot just be truncated, since fresh slots restart at generation 1.
        self.retain(|_, _| false);
    }

    /// Removes every value, yielding each with its (now stale) handle. Values the iterator does
    /// not reach are dropped when it is dropped; if it is leaked, they stay in the pool.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let a = pool.insert('a');
    /// let drained: Vec<_> = pool.drain().collect();
    /// assert_eq!(drained, [(a, 'a')]);
    /// assert!(pool.is_empty() && !pool.contains(a));
    /// ```
    pub fn drain(&mut self) -> Drain<'_, T, A> {
        Drain {
            pool: self,
            next: 0,
        }
    }

    /// Takes out the first value at or after slot `*next`, moving `*next` past it.
    fn take_from(&mut self, next: &mut usize) -> Option<(Handle<T>, T)> {
        while self.len > 0 {
            let index = *next;
            *next += 1;
            let generation = self.slots[index].generation;
            if generation & 1 == 1 {
                // SAFETY: `index` was just bounds-checked and its generation says occupied.
                let value = unsafe { self.vacate(index) };
                return Some((Handle::new(index as u32, generation), value));
            }
        }
        None
    }

    /// The values with their handles, in slot order.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let a = pool.insert(10);
    /// let b = pool.insert(20);
    /// let all: Vec<_> = pool.iter().collect();
    /// assert_eq!(all, [(a, &10), (b, &20)]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            slots: self.slots.iter().enumerate(),
            left: self.len as usize,
        }
    }

    /// The handles of the values, in slot order.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let a = pool.insert('a');
    /// let b = pool.insert('b');
    /// assert_eq!(pool.keys().collect::<Vec<_>>(), [a, b]);
    /// ```
    pub fn keys(&self) -> Keys<'_, T> {
        Keys(self.iter())
    }

    /// The values, in slot order.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// pool.insert(2);
    /// pool.insert(3);
    /// assert_eq!(pool.values().product::<i32>(), 6);
    /// ```
    pub fn values(&self) -> Values<'_, T> {
        Values(self.iter())
    }

    /// The values, mutably, in slot order.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert(2);
    /// pool.values_mut().for_each(|v| *v *= 10);
    /// assert_eq!(pool[h], 20);
    /// ```
    pub fn values_mut(&mut self) -> ValuesMut<'_, T> {
        ValuesMut(self.iter_mut())
    }

    /// The values, mutably, with their handles, in slot order.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let a = pool.insert(10);
    /// for (_, v) in pool.iter_mut() { *v += 1; }
    /// assert_eq!(pool[a], 11);
    /// ```
    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut {
            slots: self.slots.iter_mut().enumerate(),
            left: self.len as usize,
        }
    }

    /// Verifies the pool's invariants: the free list reaches every reusable slot once, and the
    /// counts agree with the slots. A correct program never sees an error; one means a bug in
    /// this crate (or memory corrupted from outside).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] naming the first broken invariant, with the address of the slot.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let mut pool = Pool::new();
    /// let h = pool.insert(1);
    /// pool.insert(2);
    /// pool.remove(h);
    /// pool.check()?;
    /// # Ok::<(), strata_alloc::Error>(())
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        let corrupt = |index: usize, what| Error::Corrupted {
            addr: self.slots.as_ptr().wrapping_add(index) as usize,
            what,
        };
        if self.slots.len() > MAX_SLOTS {
            return Err(corrupt(0, "more slots than u32 indices"));
        }
        let (mut occupied, mut retired, mut vacant) = (0usize, 0usize, 0usize);
        for slot in self.slots.iter() {
            match slot.generation {
                0 => retired += 1,
                g if g & 1 == 1 => occupied += 1,
                _ => vacant += 1,
            }
        }
        if occupied != self.len as usize {
            return Err(corrupt(0, "len disagrees with the occupied slots"));
        }
        if retired != self.retired as usize {
            return Err(corrupt(0, "retired count disagrees with the slots"));
        }
        // Walk at most `vacant` links: a longer list has a cycle or a foreign entry.
        let mut seen = 0;
        let mut at = self.free_head;
        while at != NO_SLOT {
            let index = at as usize;
            let Some(slot) = self.slots.get(index) else {
                return Err(corrupt(0, "free list leads out of the slots"));
            };
            if slot.generation == 0 || slot.is_occupied() {
                return Err(corrupt(
                    index,
                    "free list reaches a slot that is not reusable",
                ));
            }
            seen += 1;
            if seen > vacant {
                return Err(corrupt(index, "free list has a cycle"));
            }
            // SAFETY: the slot is vacant (even, nonzero generation), so `next_free` is live.
            at = unsafe { slot.body.next_free };
        }
        if seen != vacant {
            return Err(corrupt(0, "free list misses vacant slots"));
        }
        Ok(())
    }

    /// Test hook: gives every reusable slot the even generation `generation`, so tests can reach
    /// the wrap without 2^31 inserts.
    #[cfg(test)]
    fn age_free_slots(&mut self, generation: u32) {
        assert!(generation != 0 && generation & 1 == 0);
        let mut at = self.free_head;
        while at != NO_SLOT {
            let slot = &mut self.slots[at as usize];
            slot.generation = generation;
            // SAFETY: the slot is on the free list, so vacant with `next_free` live.
            at = unsafe { slot.body.next_free };
        }
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn stale(&self, handle: Handle<T>) -> ! {
        if handle.index as usize >= self.slots.len() {
            panic!(
                "Pool: {handle:?} is not from this pool (index {} is past its {} slots)",
                handle.index,
                self.slots.len()
            )
        }
        panic!("Pool: stale {handle:?}: its value was removed or the pool was cleared")
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn full() -> ! {
    panic!("Pool is full: it already has u32::MAX slots")
}

impl<T, A: Allocator> Drop for Pool<T, A> {
    fn drop(&mut self) {
        if !mem::needs_drop::<T>() {
            return;
        }
        // If a value's `Drop` panics, the guard goes on dropping the rest while unwinding (a
        // second panic aborts, as for slices). Each value is vacated before it is dropped, so
        // the panicking one is not dropped again.
        struct Rest<'a, T, A: Allocator>(&'a mut Pool<T, A>);
        impl<T, A: Allocator> Drop for Rest<'_, T, A> {
            fn drop(&mut self) {
                self.0.clear();
            }
        }
        let rest = Rest(self);
        rest.0.clear();
    }
}

impl<T, A: Allocator> Index<Handle<T>> for Pool<T, A> {
    type Output = T;

    /// # Panics
    ///
    /// If the handle is stale, with a message saying so.
    #[inline]
    #[track_caller]
    fn index(&self, handle: Handle<T>) -> &T {
        match self.get(handle) {
            Some(value) => value,
            None => self.stale(handle),
        }
    }
}

impl<T, A: Allocator> IndexMut<Handle<T>> for Pool<T, A> {
    /// # Panics
    ///
    /// If the handle is stale, with a message saying so.
    #[inline]
    #[track_caller]
    fn index_mut(&mut self, handle: Handle<T>) -> &mut T {
        if !self.contains(handle) {
            self.stale(handle);
        }
        match self.get_mut(handle) {
            Some(value) => value,
            None => unreachable!(),
        }
    }
}

/// Clones every value; the clone answers to the same handles as the original.
impl<T: Clone, A: Allocator + Clone> Clone for Pool<T, A> {
    fn clone(&self) -> Self {
        let mut slots = Vec::with_capacity_in(self.slots.len(), self.allocator().clone());
        for slot in self.slots.iter() {
            let body = match slot.value() {
                Some(value) => SlotBody {
                    value: ManuallyDrop::new(value.clone()),
                },
                // SAFETY: not occupied, so `next_free` is the live field (or, retired, an
                // initialised integer that is never read).
                None => SlotBody {
                    next_free: unsafe { slot.body.next_free },
                },
            };
            // A panicking `clone` leaks the values cloned so far (`Slot` has no `Drop`); it
            // never drops anything twice.
            slots.push(Slot {
                body,
                generation: slot.generation,
            });
        }
        Pool {
            slots,
            free_head: self.free_head,
            len: self.len,
            retired: self.retired,
        }
    }
}

impl<T: fmt::Debug, A: Allocator> fmt::Debug for Pool<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Iterator over `(Handle<T>, &T)`, from [`Pool::iter`].
///
/// ```
/// use strata_alloc::Pool;
/// let mut pool = Pool::new();
/// pool.insert(1);
/// pool.insert(2);
/// assert_eq!(pool.iter().map(|(_, v)| v).sum::<i32>(), 3);
/// ```
pub struct Iter<'a, T> {
    slots: core::iter::Enumerate<core::slice::Iter<'a, Slot<T>>>,
    /// Values not yet yielded: lets the scan stop before trailing vacant slots.
    left: usize,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = (Handle<T>, &'a T);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        for (index, slot) in &mut self.slots {
            if let Some(value) = slot.value() {
                self.left -= 1;
                return Some((Handle::new(index as u32, slot.generation), value));
            }
        }
        None
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        while let Some((index, slot)) = self.slots.next_back() {
            if let Some(value) = slot.value() {
                self.left -= 1;
                return Some((Handle::new(index as u32, slot.generation), value));
            }
        }
        None
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}
impl<T> FusedIterator for Iter<'_, T> {}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter {
            slots: self.slots.clone(),
            left: self.left,
        }
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("left", &self.left).finish()
    }
}

/// Iterator over `(Handle<T>, &mut T)`, from [`Pool::iter_mut`].
///
/// ```
/// use strata_alloc::Pool;
/// let mut pool = Pool::new();
/// let h = pool.insert(1);
/// for (_, v) in &mut pool { *v *= 10; }
/// assert_eq!(pool[h], 10);
/// ```
pub struct IterMut<'a, T> {
    slots: core::iter::Enumerate<core::slice::IterMut<'a, Slot<T>>>,
    left: usize,
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = (Handle<T>, &'a mut T);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        for (index, slot) in &mut self.slots {
            let generation = slot.generation;
            if let Some(value) = slot.value_mut() {
                self.left -= 1;
                return Some((Handle::new(index as u32, generation), value));
            }
        }
        None
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> DoubleEndedIterator for IterMut<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        while let Some((index, slot)) = self.slots.next_back() {
            let generation = slot.generation;
            if let Some(value) = slot.value_mut() {
                self.left -= 1;
                return Some((Handle::new(index as u32, generation), value));
            }
        }
        None
    }
}

impl<T> ExactSizeIterator for IterMut<'_, T> {}
impl<T> FusedIterator for IterMut<'_, T> {}

impl<T> fmt::Debug for IterMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IterMut").field("left", &self.left).finish()
    }
}

/// Iterator over a pool's handles, from [`Pool::keys`].
///
/// ```
/// let mut pool = strata_alloc::Pool::new();
/// let h = pool.insert(1);
/// assert_eq!(pool.keys().next(), Some(h));
/// ```
pub struct Keys<'a, T>(Iter<'a, T>);

// By hand: a derive would demand `T: Clone` and `T: Debug`.
impl<T> Clone for Keys<'_, T> {
    fn clone(&self) -> Self {
        Keys(self.0.clone())
    }
}

impl<T> fmt::Debug for Keys<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Keys").field(&self.0).finish()
    }
}

impl<T> Iterator for Keys<'_, T> {
    type Item = Handle<T>;

    #[inline]
    fn next(&mut self) -> Option<Handle<T>> {
        self.0.next().map(|(h, _)| h)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<T> DoubleEndedIterator for Keys<'_, T> {
    fn next_back(&mut self) -> Option<Handle<T>> {
        self.0.next_back().map(|(h, _)| h)
    }
}

impl<T> ExactSizeIterator for Keys<'_, T> {}
impl<T> FusedIterator for Keys<'_, T> {}

/// Iterator over a pool's values, from [`Pool::values`].
///
/// ```
/// let mut pool = strata_alloc::Pool::new();
/// pool.insert(1);
/// assert_eq!(pool.values().next(), Some(&1));
/// ```
pub struct Values<'a, T>(Iter<'a, T>);

// By hand: a derive would demand `T: Clone` and `T: Debug`.
impl<T> Clone for Values<'_, T> {
    fn clone(&self) -> Self {
        Values(self.0.clone())
    }
}

impl<T> fmt::Debug for Values<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Values").field(&self.0).finish()
    }
}

impl<'a, T> Iterator for Values<'a, T> {
    type Item = &'a T;

    #[inline]
    fn next(&mut self) -> Option<&'a T> {
        self.0.next().map(|(_, v)| v)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<T> DoubleEndedIterator for Values<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(_, v)| v)
    }
}

impl<T> ExactSizeIterator for Values<'_, T> {}
impl<T> FusedIterator for Values<'_, T> {}

/// Iterator over a pool's values, mutably, from [`Pool::values_mut`].
///
/// ```
/// let mut pool = strata_alloc::Pool::new();
/// pool.insert(1);
/// assert_eq!(pool.values_mut().len(), 1);
/// ```
pub struct ValuesMut<'a, T>(IterMut<'a, T>);

impl<T> fmt::Debug for ValuesMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValuesMut").field(&self.0).finish()
    }
}

impl<'a, T> Iterator for ValuesMut<'a, T> {
    type Item = &'a mut T;

    #[inline]
    fn next(&mut self) -> Option<&'a mut T> {
        self.0.next().map(|(_, v)| v)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<T> DoubleEndedIterator for ValuesMut<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(_, v)| v)
    }
}

impl<T> ExactSizeIterator for ValuesMut<'_, T> {}
impl<T> FusedIterator for ValuesMut<'_, T> {}

/// Iterator taking every value out of a pool, from [`Pool::drain`].
///
/// ```
/// use strata_alloc::Pool;
/// let mut pool = Pool::new();
/// pool.insert(String::from("a"));
/// pool.insert(String::from("b"));
/// let mut drain = pool.drain();
/// assert_eq!(drain.next().map(|(_, s)| s).as_deref(), Some("a"));
/// drop(drain); // drops "b"
/// assert!(pool.is_empty());
/// ```
pub struct Drain<'a, T, A: Allocator = Global> {
    pool: &'a mut Pool<T, A>,
    next: usize,
}

impl<T, A: Allocator> Iterator for Drain<'_, T, A> {
    type Item = (Handle<T>, T);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.pool.take_from(&mut self.next)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        // Everything before `next` is already taken, so every value left is still ahead.
        (self.pool.len(), Some(self.pool.len()))
    }
}

impl<T, A: Allocator> ExactSizeIterator for Drain<'_, T, A> {}
impl<T, A: Allocator> FusedIterator for Drain<'_, T, A> {}

impl<T, A: Allocator> Drop for Drain<'_, T, A> {
    fn drop(&mut self) {
        self.for_each(drop);
    }
}

impl<T, A: Allocator> fmt::Debug for Drain<'_, T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("left", &self.pool.len())
            .finish()
    }
}

/// Owning iterator over `(Handle<T>, T)`, from `Pool::into_iter`.
///
/// ```
/// use strata_alloc::Pool;
/// let mut pool = Pool::new();
/// let h = pool.insert(String::from("x"));
/// let all: Vec<_> = pool.into_iter().collect();
/// assert_eq!(all, [(h, String::from("x"))]);
/// ```
pub struct IntoIter<T, A: Allocator = Global> {
    pool: Pool<T, A>,
    next: usize,
}

impl<T, A: Allocator> Iterator for IntoIter<T, A> {
    type Item = (Handle<T>, T);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.pool.take_from(&mut self.next)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.pool.len(), Some(self.pool.len()))
    }
}

impl<T, A: Allocator> ExactSizeIterator for IntoIter<T, A> {}
impl<T, A: Allocator> FusedIterator for IntoIter<T, A> {}

impl<T, A: Allocator> fmt::Debug for IntoIter<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter")
            .field("left", &self.pool.len())
            .finish()
    }
}

impl<T, A: Allocator> IntoIterator for Pool<T, A> {
    type Item = (Handle<T>, T);
    type IntoIter = IntoIter<T, A>;

    fn into_iter(self) -> IntoIter<T, A> {
        IntoIter {
            pool: self,
            next: 0,
        }
    }
}

impl<'a, T, A: Allocator> IntoIterator for &'a Pool<T, A> {
    type Item = (Handle<T>, &'a T);
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<'a, T, A: Allocator> IntoIterator for &'a mut Pool<T, A> {
    type Item = (Handle<T>, &'a mut T);
    type IntoIter = IterMut<'a, T>;

    fn into_iter(self) -> IterMut<'a, T> {
        self.iter_mut()
    }
}

/// The error of [`Pool::try_insert`]: why no slot could be had, and the value, handed back.
///
/// ```
/// use strata_alloc::{InsertError, Pool};
/// let bump = bumpalo::Bump::new();
/// bump.set_allocation_limit(Some(0));
/// let mut pool = Pool::new_in(&bump);
/// let err: InsertError<&str> = pool.try_insert("v").unwrap_err();
/// println!("{err}"); // Pool::try_insert failed: out of memory: ...
/// let boxed: Box<dyn std::error::Error> = Box::new(err);
/// assert!(boxed.source().is_some());
/// ```
pub struct InsertError<T> {
    value: T,
    error: Error,
}

impl<T> InsertError<T> {
    /// Why the insert failed.
    ///
    /// ```
    /// use strata_alloc::{Error, Pool};
    /// let bump = bumpalo::Bump::new();
    /// bump.set_allocation_limit(Some(0));
    /// let mut pool = Pool::new_in(&bump);
    /// let err = pool.try_insert(1u8).unwrap_err();
    /// assert!(matches!(err.error(), Error::OutOfMemory { .. }));
    /// ```
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The value that was not inserted.
    ///
    /// ```
    /// use strata_alloc::Pool;
    /// let bump = bumpalo::Bump::new();
    /// bump.set_allocation_limit(Some(0));
    /// let mut pool = Pool::new_in(&bump);
    /// let back = pool.try_insert(vec![1, 2]).unwrap_err().into_value();
    /// assert_eq!(back, [1, 2]);
    /// ```
    pub fn into_value(self) -> T {
        self.value
    }
}

// By hand, so that an `InsertError<T>` is printable and a `std::error::Error` for every `T`.
impl<T> fmt::Debug for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pool::try_insert failed: {}", self.error)
    }
}

impl<T> std::error::Error for InsertError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// Counts drops in a shared cell.
    struct Counted(Rc<Cell<usize>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn insert_get_remove_reuse() {
        let mut pool = Pool::new();
        let a = pool.insert(1u32);
        let b = pool.insert(2);
        assert_eq!((a.index(), a.generation().get()), (0, 1));
        assert_eq!((b.index(), b.generation().get()), (1, 1));
        assert_eq!(pool.remove(a), Some(1));
        assert_eq!(pool.remove(a), None);
        let c = pool.insert(3);
        assert_eq!((c.index(), c.generation().get()), (0, 3));
        assert_eq!(pool.get(a), None);
        assert_eq!(pool.get(c), Some(&3));
        assert_eq!(pool.len(), 2);
        pool.check().unwrap();
    }

    #[test]
    fn generation_retires_instead_of_wrapping() {
        let mut pool = Pool::new();
        let first = pool.insert(String::from("first"));
        pool.remove(first);
        // Slot 0 is vacant; pretend it has been reused almost 2^31 times.
        pool.age_free_slots(u32::MAX - 3);
        let mut old = vec![first];
        let h = pool.insert(String::from("a"));
        assert_eq!((h.index(), h.generation().get()), (0, u32::MAX - 2));
        pool.remove(h);
        old.push(h);
        let last = pool.insert(String::from("b"));
        assert_eq!((last.index(), last.generation().get()), (0, u32::MAX));
        assert_eq!(pool.remove(last).as_deref(), Some("b"));
        old.push(last);
        pool.check().unwrap();
        assert_eq!(pool.retired, 1);
        // The retired slot is never handed out again, and no old handle reaches anything.
        for i in 0..4 {
            let h = pool.insert(i.to_string());
            assert_ne!(h.index(), 0);
            for &o in &old {
                assert!(!pool.contains(o));
                assert!(pool.remove(o).is_none());
            }
        }
        pool.clear();
        pool.check().unwrap();
        assert_eq!(pool.capacity(), pool.slots.capacity() - 1);
        assert!(pool.iter().all(|(h, _)| h.index() != 0));
    }

    #[test]
    fn clear_retires_slots_at_the_last_generation() {
        let mut pool = Pool::new();
        let h = pool.insert(0u8);
        pool.remove(h);
        pool.age_free_slots(u32::MAX - 1);
        let h = pool.insert(1);
        assert_eq!(h.generation().get(), u32::MAX);
        pool.clear();
        pool.check().unwrap();
        assert_eq!(pool.insert(2).index(), 1);
        assert!(!pool.contains(h));
    }

    #[test]
    fn drops_exactly_once() {
        let drops = Rc::new(Cell::new(0));
        let mut pool = Pool::new();
        let hs: std::vec::Vec<_> = (0..10)
            .map(|_| pool.insert(Counted(drops.clone())))
            .collect();
        drop(pool.remove(hs[0]));
        assert_eq!(drops.get(), 1);
        pool.retain(|h, _| h.index() % 2 == 0);
        assert_eq!(drops.get(), 1 + 5);
        let mut drain = pool.drain();
        drop(drain.next());
        assert_eq!(drops.get(), 7);
        drop(drain);
        assert_eq!(drops.get(), 10);
        for _ in 0..3 {
            pool.insert(Counted(drops.clone()));
        }
        pool.clear();
        assert_eq!(drops.get(), 13);
        for _ in 0..3 {
            pool.insert(Counted(drops.clone()));
        }
        drop(pool);
        assert_eq!(drops.get(), 16);
    }

    #[test]
    fn panicking_drop_is_not_repeated() {
        struct Bomb(Rc<Cell<usize>>, bool);
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
                if self.1 {
                    panic!("boom");
                }
            }
        }
        let drops = Rc::new(Cell::new(0));
        let mut pool = Pool::new();
        for i in 0..4 {
            pool.insert(Bomb(drops.clone(), i == 1));
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.clear()));
        assert!(r.is_err());
        assert_eq!(drops.get(), 2);
        pool.check().unwrap();
        assert_eq!(pool.len(), 2);
        drop(pool);
        assert_eq!(drops.get(), 4);

        // In the pool's own drop the rest are still dropped.
        let drops = Rc::new(Cell::new(0));
        let mut pool = Pool::new();
        for i in 0..4 {
            pool.insert(Bomb(drops.clone(), i == 0));
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(pool)));
        assert!(r.is_err());
        assert_eq!(drops.get(), 4);
    }

    #[test]
    fn disjoint_mut() {
        let mut pool = Pool::new();
        let a = pool.insert(1);
        let b = pool.insert(2);
        let c = pool.insert(3);
        let [x, y, z] = pool.get_disjoint_mut([c, a, b]).unwrap();
        (*x, *y, *z) = (*y, *z, *x);
        assert_eq!((pool[a], pool[b], pool[c]), (2, 3, 1));
        assert!(pool.get_disjoint_mut([a, b, a]).is_none());
        pool.remove(b);
        assert!(pool.get_disjoint_mut([a, b]).is_none());
        assert!(pool.get_disjoint_mut([a]).is_some());
        assert_eq!(pool.get_disjoint_mut::<0>([]).map(|r| r.len()), Some(0));
    }

    #[test]
    fn zero_sized_values() {
        let mut pool = Pool::new();
        let hs: std::vec::Vec<_> = (0..5).map(|_| pool.insert(())).collect();
        assert_eq!(pool.remove(hs[2]), Some(()));
        assert_eq!(pool.iter().count(), 4);
        assert_eq!(pool.get(hs[2]), None);
        pool.check().unwrap();
    }

    #[test]
    fn works_in_bumpalo() {
        let bump = bumpalo::Bump::new();
        let mut pool = Pool::new_in(&bump);
        let hs: std::vec::Vec<_> = (0..100).map(|i| pool.insert(i.to_string())).collect();
        pool.retain(|_, s| s.len() == 1);
        assert_eq!(pool.len(), 10);
        assert_eq!(pool[hs[7]], "7");
        let copy = pool.clone();
        assert_eq!(copy[hs[7]], "7");
        pool.check().unwrap();
    }

    #[test]
    fn model_small() {
        let mut rng = Rng::new(5);
        let mut pool: Pool<u32> = Pool::new();
        let mut model: HashMap<Handle<u32>, u32> = HashMap::new();
        let mut seen: std::vec::Vec<Handle<u32>> = std::vec::Vec::new();
        let ops = if cfg!(miri) { 300 } else { 20_000 };
        for op in 0..ops {
            let pick = |rng: &mut Rng, seen: &[Handle<u32>]| seen[rng.range(0, seen.len())];
            match rng.range(0, 10) {
                0..=3 => {
                    let h = pool.insert(op);
                    assert!(model.insert(h, op).is_none(), "handle reused: {h:?}");
                    seen.push(h);
                }
                4..=5 if !seen.is_empty() => {
                    let h = pick(&mut rng, &seen);
                    assert_eq!(pool.remove(h), model.remove(&h));
                }
                6 if !seen.is_empty() => {
                    let h = pick(&mut rng, &seen);
                    if let Some(v) = pool.get_mut(h) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&h) {
                        *v += 1;
                    }
                }
                7 if rng.chance(1, 50) => {
                    pool.clear();
                    model.clear();
                }
                _ if !seen.is_empty() => {
                    let h = pick(&mut rng, &seen);
                    assert_eq!(pool.get(h), model.get(&h));
                    assert_eq!(pool.contains(h), model.contains_key(&h));
                }
                _ => {}
            }
            pool.check().unwrap();
            assert_eq!(pool.len(), model.len());
        }
        let mut all: std::vec::Vec<_> = pool.iter().map(|(h, &v)| (h, v)).collect();
        let mut expected: std::vec::Vec<_> = model.into_iter().collect();
        all.sort();
        expected.sort();
        assert_eq!(all, expected);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn handles_round_trip_through_serde_and_bad_ones_are_refused() {
        let mut pool = Pool::new();
        let a = pool.insert("a");
        pool.remove(a);
        let b = pool.insert("b");
        let text = serde_json::to_string(&[a, b]).unwrap();
        assert_eq!(text, "[[0,1],[0,3]]");
        let back: [Handle<&str>; 2] = serde_json::from_str(&text).unwrap();
        assert_eq!(back, [a, b]);
        assert_eq!(pool.get(back[0]), None);
        assert_eq!(pool.get(back[1]), Some(&"b"));
        // An even generation would name a vacant slot: refused, never compared.
        assert!(serde_json::from_str::<Handle<&str>>("[0,2]").is_err());
        assert!(serde_json::from_str::<Handle<&str>>("[0,0]").is_err());
        let far: Handle<&str> = serde_json::from_str("[4000000000,7]").unwrap();
        assert_eq!(pool.get(far), None);
    }

    #[test]
    fn keys_and_values_follow_iter() {
        let mut pool = Pool::new();
        let hs: std::vec::Vec<_> = (0..10).map(|i| pool.insert(i)).collect();
        pool.remove(hs[3]);
        let pairs: std::vec::Vec<_> = pool.iter().map(|(h, &v)| (h, v)).collect();
        let keys: std::vec::Vec<_> = pool.keys().collect();
        let values: std::vec::Vec<_> = pool.values().copied().collect();
        assert_eq!(
            keys,
            pairs.iter().map(|p| p.0).collect::<std::vec::Vec<_>>()
        );
        assert_eq!(
            values,
            pairs.iter().map(|p| p.1).collect::<std::vec::Vec<_>>()
        );
        assert_eq!(pool.keys().len(), 9);
        assert_eq!(pool.values().next_back(), Some(&9));
        pool.values_mut().for_each(|v| *v += 100);
        assert!(pool.values().all(|&v| v >= 100));
    }

    #[test]
    fn try_insert_and_reserve() {
        let mut pool: Pool<u64> = Pool::new();
        let h = pool.try_insert(9).unwrap();
        assert_eq!(pool[h], 9);
        assert!(matches!(
            pool.try_reserve(usize::MAX),
            Err(Error::OutOfMemory { .. })
        ));
        pool.try_reserve(10).unwrap();
        assert!(pool.capacity() >= 11);
        pool.check().unwrap();
    }
}
