//! Collections that live in a Bump: [`Vec`], [`String`], and the [`bump_vec!`](crate::bump_vec)
//! and [`bump_format!`](crate::bump_format) macros.
//!
//! `Vec` is allocator-api2's `Vec` in the arena, so it has the whole of `std::vec::Vec`'s API,
//! and it grows in place while it is the last allocation. `String` is a UTF-8 `Vec<u8>` in the
//! arena with `String`'s everyday methods. Both are freed with the arena's scope; dropping them
//! early gives their bytes back only when they are the last allocation.
//!
//! Like `std`'s collections, they call `handle_alloc_error` when the arena refuses memory (the
//! allocation limit, or the OS); the `try_` methods return the error instead.

use core::borrow::{Borrow, BorrowMut};
use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::{Deref, DerefMut};

use super::Bump;
use crate::Error;

/// A vector in a [`Bump`]: allocator-api2's `Vec` with the arena as its allocator.
///
/// ```
/// use strata_alloc::{Bump, bump};
///
/// let bump = Bump::new();
/// let mut v: bump::Vec<'_, u32> = bump::Vec::new_in(&bump);
/// v.extend([1, 2, 3]);
/// v.push(4);
/// assert_eq!(v, [1, 2, 3, 4]);
/// let slice: &mut [u32] = v.leak(); // lives as long as the arena's borrow, like bumpalo's into_bump_slice
/// assert_eq!(slice.len(), 4);
/// ```
pub type Vec<'b, T> = allocator_api2::vec::Vec<T, &'b Bump>;

/// Makes a [`Vec`] in a Bump, like `vec!`: `bump_vec![in &bump; 1, 2, 3]` or
/// `bump_vec![in &bump; 0u8; 16]`.
///
/// ```
/// use strata_alloc::{Bump, bump_vec};
///
/// let bump = Bump::new();
/// let v = bump_vec![in &bump; 1, 2, 3];
/// assert_eq!(v, [1, 2, 3]);
/// let zeros = bump_vec![in &bump; 0u8; 16];
/// assert_eq!(zeros.len(), 16);
/// let empty: strata_alloc::bump::Vec<'_, u8> = bump_vec![in &bump];
/// assert!(empty.is_empty());
/// ```
#[macro_export]
macro_rules! bump_vec {
    (in $bump:expr $(;)?) => {
        $crate::bump::Vec::new_in($bump)
    };
    (in $bump:expr; $elem:expr; $n:expr) => {{
        let n = $n;
        let mut v = $crate::bump::Vec::with_capacity_in(n, $bump);
        v.resize(n, $elem);
        v
    }};
    (in $bump:expr; $($x:expr),+ $(,)?) => {{
        let items = [$($x),+];
        let mut v = $crate::bump::Vec::with_capacity_in(items.len(), $bump);
        v.extend(items);
        v
    }};
}

/// Formats into a [`String`] in a Bump, like `format!`: `bump_format!(in &bump, "{}", x)`.
///
/// # Panics
///
/// If a `Display` impl returns an error (as `format!` does). If the arena refuses memory,
/// `handle_alloc_error` is called.
///
/// ```
/// use strata_alloc::{Bump, bump_format};
///
/// let bump = Bump::new();
/// let id = 42;
/// let s = bump_format!(in &bump, "request-{id}: {} bytes", 1500);
/// assert_eq!(s, "request-42: 1500 bytes");
/// ```
#[macro_export]
macro_rules! bump_format {
    (in $bump:expr, $($arg:tt)*) => {{
        let mut s = $crate::bump::String::new_in($bump);
        ::core::fmt::Write::write_fmt(&mut s, ::core::format_args!($($arg)*))
            .expect("a Display implementation returned an error unexpectedly");
        s
    }};
}

/// A UTF-8 string in a [`Bump`].
///
/// It derefs to `str`, so every `str` method works on it; it implements `fmt::Write`, so
/// `write!` works into it (see also [`bump_format!`](crate::bump_format)).
///
/// ```
/// use strata_alloc::{Bump, bump::String};
///
/// let bump = Bump::new();
/// let mut s = String::new_in(&bump);
/// s.push_str("hello");
/// s.push(',');
/// s.push_str(" arena");
/// assert_eq!(s, "hello, arena");
/// assert!(s.starts_with("hello"));
/// let kept: &mut str = s.into_bump_str(); // lives as long as the arena's borrow
/// assert_eq!(kept.len(), 12);
/// ```
#[derive(Clone)]
pub struct String<'b> {
    /// Always valid UTF-8.
    vec: Vec<'b, u8>,
}

impl<'b> String<'b> {
    /// An empty string in `bump`; allocates nothing until something is pushed.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s = strata_alloc::bump::String::new_in(&bump);
    /// assert!(s.is_empty() && s.capacity() == 0);
    /// ```
    pub fn new_in(bump: &'b Bump) -> String<'b> {
        String {
            vec: Vec::new_in(bump),
        }
    }

    /// An empty string in `bump` with room for `capacity` bytes.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s = strata_alloc::bump::String::with_capacity_in(100, &bump);
    /// assert!(s.capacity() >= 100);
    /// ```
    pub fn with_capacity_in(capacity: usize, bump: &'b Bump) -> String<'b> {
        String {
            vec: Vec::with_capacity_in(capacity, bump),
        }
    }

    /// A copy of `s` in `bump`.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s = strata_alloc::bump::String::from_str_in("copied", &bump);
    /// assert_eq!(s, "copied");
    /// ```
    pub fn from_str_in(s: &str, bump: &'b Bump) -> String<'b> {
        let mut out = String::with_capacity_in(s.len(), bump);
        out.push_str(s);
        out
    }

    /// Takes `bytes` as a string if they are UTF-8, else hands them back.
    ///
    /// # Errors
    ///
    /// The bytes, unchanged, when they are not valid UTF-8.
    ///
    /// ```
    /// use strata_alloc::{Bump, bump_vec, bump::String};
    /// let bump = Bump::new();
    /// let s = String::from_utf8(bump_vec![in &bump; b'o', b'k']).unwrap();
    /// assert_eq!(s, "ok");
    /// assert!(String::from_utf8(bump_vec![in &bump; 0xff]).is_err());
    /// ```
    pub fn from_utf8(bytes: Vec<'b, u8>) -> Result<String<'b>, Vec<'b, u8>> {
        match core::str::from_utf8(&bytes) {
            Ok(_) => Ok(String { vec: bytes }),
            Err(_) => Err(bytes),
        }
    }

    /// Appends `s`.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut s = strata_alloc::bump::String::new_in(&bump);
    /// s.push_str("ab");
    /// s.push_str("cd");
    /// assert_eq!(s, "abcd");
    /// ```
    #[inline]
    pub fn push_str(&mut self, s: &str) {
        self.vec.extend_from_slice(s.as_bytes());
    }

    /// Like [`push_str`](String::push_str), but returns an error instead of calling
    /// `handle_alloc_error` when the arena refuses memory; the string is then unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] when the arena cannot grow the string.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// bump.set_allocation_limit(Some(8));
    /// let mut s = strata_alloc::bump::String::new_in(&bump);
    /// assert!(s.try_push_str("12345678").is_ok());
    /// assert!(s.try_push_str("9").is_err());
    /// assert_eq!(s, "12345678");
    /// ```
    pub fn try_push_str(&mut self, s: &str) -> Result<(), Error> {
        self.vec
            .try_reserve(s.len())
            .map_err(|_| Error::oom(s.len(), self.vec.capacity() - self.vec.len()))?;
        self.vec.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// Appends one character.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut s = strata_alloc::bump::String::new_in(&bump);
    /// s.push('é');
    /// assert_eq!((s.as_str(), s.len()), ("é", 2));
    /// ```
    #[inline]
    pub fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    /// Removes and returns the last character.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut s = strata_alloc::bump::String::from_str_in("ab", &bump);
    /// assert_eq!(s.pop(), Some('b'));
    /// assert_eq!(s, "a");
    /// ```
    pub fn pop(&mut self) -> Option<char> {
        let c = self.as_str().chars().next_back()?;
        self.vec.truncate(self.len() - c.len_utf8());
        Some(c)
    }

    /// Shortens the string to `new_len` bytes (no effect if it is already shorter).
    ///
    /// # Panics
    ///
    /// If `new_len` is not on a character boundary, as `std::string::String::truncate`.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut s = strata_alloc::bump::String::from_str_in("hello", &bump);
    /// s.truncate(2);
    /// assert_eq!(s, "he");
    /// ```
    pub fn truncate(&mut self, new_len: usize) {
        if new_len < self.len() {
            assert!(
                self.as_str().is_char_boundary(new_len),
                "String::truncate: {new_len} is not a character boundary"
            );
            self.vec.truncate(new_len);
        }
    }

    /// Empties the string, keeping its capacity.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut s = strata_alloc::bump::String::from_str_in("x", &bump);
    /// s.clear();
    /// assert!(s.is_empty() && s.capacity() >= 1);
    /// ```
    pub fn clear(&mut self) {
        self.vec.clear();
    }

    /// Makes room for at least `additional` more bytes.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut s = strata_alloc::bump::String::new_in(&bump);
    /// s.reserve(64);
    /// assert!(s.capacity() >= 64);
    /// ```
    pub fn reserve(&mut self, additional: usize) {
        self.vec.reserve(additional);
    }

    /// Bytes in the string.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert_eq!(strata_alloc::bump::String::from_str_in("ab", &bump).len(), 2);
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.vec.len()
    }

    /// Whether the string is empty.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// assert!(strata_alloc::bump::String::new_in(&bump).is_empty());
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.vec.is_empty()
    }

    /// Bytes the string can hold without growing.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s = strata_alloc::bump::String::with_capacity_in(10, &bump);
    /// assert!(s.capacity() >= 10);
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        self.vec.capacity()
    }

    /// The string as a `&str`.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s = strata_alloc::bump::String::from_str_in("ok", &bump);
    /// assert_eq!(s.as_str(), "ok");
    /// ```
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: `vec` only ever holds UTF-8 (every method appends whole `str`s or cuts at a
        // character boundary).
        unsafe { core::str::from_utf8_unchecked(&self.vec) }
    }

    /// The string as a `&mut str`.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let mut s = strata_alloc::bump::String::from_str_in("ok", &bump);
    /// s.as_mut_str().make_ascii_uppercase();
    /// assert_eq!(s, "OK");
    /// ```
    #[inline]
    pub fn as_mut_str(&mut self) -> &mut str {
        // SAFETY: as in `as_str`; a `&mut str` only allows UTF-8-preserving changes.
        unsafe { core::str::from_utf8_unchecked_mut(&mut self.vec) }
    }

    /// The string's bytes.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s = strata_alloc::bump::String::from_str_in("ok", &bump);
    /// assert_eq!(s.as_bytes(), b"ok");
    /// ```
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.vec
    }

    /// The string's bytes as a `Vec` in the same arena.
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s = strata_alloc::bump::String::from_str_in("ok", &bump);
    /// assert_eq!(s.into_bytes(), b"ok");
    /// ```
    pub fn into_bytes(self) -> Vec<'b, u8> {
        self.vec
    }

    /// Gives the string to the arena: a `&mut str` that lives as long as the arena's borrow
    /// (bumpalo's `into_bump_str`).
    ///
    /// ```
    /// let bump = strata_alloc::Bump::new();
    /// let s: &mut str = strata_alloc::bump_format!(in &bump, "{}-{}", 1, 2).into_bump_str();
    /// assert_eq!(s, "1-2");
    /// ```
    pub fn into_bump_str(self) -> &'b mut str {
        let bytes = self.vec.leak();
        // SAFETY: the bytes are the string's, UTF-8 (see `as_str`).
        unsafe { core::str::from_utf8_unchecked_mut(bytes) }
    }
}

impl Deref for String<'_> {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl DerefMut for String<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut str {
        self.as_mut_str()
    }
}

impl AsRef<str> for String<'_> {
    fn as_ref(&self) -> &str {
        self
    }
}

impl AsRef<[u8]> for String<'_> {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<str> for String<'_> {
    fn borrow(&self) -> &str {
        self
    }
}

impl BorrowMut<str> for String<'_> {
    fn borrow_mut(&mut self) -> &mut str {
        self
    }
}

impl fmt::Write for String<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }

    #[inline]
    fn write_char(&mut self, c: char) -> fmt::Result {
        self.push(c);
        Ok(())
    }
}

impl fmt::Display for String<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for String<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<'s> Extend<&'s str> for String<'_> {
    fn extend<I: IntoIterator<Item = &'s str>>(&mut self, iter: I) {
        iter.into_iter().for_each(|s| self.push_str(s));
    }
}

impl Extend<char> for String<'_> {
    fn extend<I: IntoIterator<Item = char>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.reserve(iter.size_hint().0);
        iter.for_each(|c| self.push(c));
    }
}

impl PartialEq for String<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for String<'_> {}

impl PartialOrd for String<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for String<'_> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// Hashes as the `str` does, so a `String` can be looked up by `&str` in a map.
impl Hash for String<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for String<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for String<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<std::string::String> for String<'_> {
    fn eq(&self, other: &std::string::String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<String<'_>> for str {
    fn eq(&self, other: &String<'_>) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<String<'_>> for &str {
    fn eq(&self, other: &String<'_>) -> bool {
        *self == other.as_str()
    }
}
