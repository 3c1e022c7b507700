//! Slice access without bounds checks, for the kernels' inner loops.
//!
//! Every kernel checks its slice lengths against its params once, at entry, and returns
//! without writing when they disagree. From then on every index it computes is in bounds
//! by construction (each kernel says why next to its `unsafe` block), so per-access
//! bounds checks would only add branches and, worse for firmware, panic paths. These two
//! helpers drop them; `debug_assert!` still checks every access in debug builds and tests.
#![allow(unsafe_code)]

/// `s[i]` without a bounds check.
///
/// # Safety
///
/// `i < s.len()`.
#[inline(always)]
pub(crate) unsafe fn get<T: Copy>(s: &[T], i: usize) -> T {
    debug_assert!(i < s.len(), "index {i} out of bounds ({})", s.len());
    // SAFETY: the caller guarantees `i < s.len()`.
    unsafe { *s.get_unchecked(i) }
}

/// `s[i] = v` without a bounds check.
///
/// # Safety
///
/// `i < s.len()`.
#[inline(always)]
pub(crate) unsafe fn set<T>(s: &mut [T], i: usize, v: T) {
    debug_assert!(i < s.len(), "index {i} out of bounds ({})", s.len());
    // SAFETY: the caller guarantees `i < s.len()`.
    unsafe { *s.get_unchecked_mut(i) = v }
}

/// The four bytes `s[i..i + 4]` without a bounds check (one unaligned load where the
/// target allows it).
///
/// # Safety
///
/// `i + 4 <= s.len()`.
#[inline(always)]
pub(crate) unsafe fn get4(s: &[i8], i: usize) -> [i8; 4] {
    debug_assert!(
        i + 4 <= s.len(),
        "bytes {i}..{} out of bounds ({})",
        i + 4,
        s.len()
    );
    // SAFETY: the caller guarantees `i + 4 <= s.len()`; [i8; 4] has alignment 1.
    unsafe { s.as_ptr().add(i).cast::<[i8; 4]>().read() }
}

/// `s[i..i + 4] = v` without a bounds check (one unaligned store where the target
/// allows it).
///
/// # Safety
///
/// `i + 4 <= s.len()`.
#[inline(always)]
pub(crate) unsafe fn set4(s: &mut [i8], i: usize, v: [i8; 4]) {
    debug_assert!(
        i + 4 <= s.len(),
        "bytes {i}..{} out of bounds ({})",
        i + 4,
        s.len()
    );
    // SAFETY: the caller guarantees `i + 4 <= s.len()`; [i8; 4] has alignment 1.
    unsafe { s.as_mut_ptr().add(i).cast::<[i8; 4]>().write(v) }
}

/// The three elements `s[i..i + 3]` as an array reference, without a bounds check.
///
/// # Safety
///
/// `i + 3 <= s.len()`.
#[inline(always)]
pub(crate) unsafe fn get3<T>(s: &[T], i: usize) -> &[T; 3] {
    debug_assert!(
        i + 3 <= s.len(),
        "elements {i}..{} out of bounds ({})",
        i + 3,
        s.len()
    );
    // SAFETY: the caller guarantees `i + 3 <= s.len()`; [T; 3] has T's alignment.
    unsafe { &*s.as_ptr().add(i).cast::<[T; 3]>() }
}
