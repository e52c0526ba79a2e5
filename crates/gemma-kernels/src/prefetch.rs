//! Software prefetch of the weight rows a decode task reads next. Decoding
//! streams every weight once per token; on the 2-core Xeon VM the hardware
//! prefetcher alone left the packed decode kernel ~20% slower (tg128 39 → 47
//! t/s, median of 5 alternating runs; 2 to 16 rows ahead all helped).

/// How far ahead of the row being computed its task's bytes are requested.
pub(crate) const AHEAD_BYTES: usize = 4096;

/// Rows of `row_bytes` each to look ahead (at least 1).
#[inline]
pub(crate) fn rows_ahead(row_bytes: usize) -> usize {
    (AHEAD_BYTES / row_bytes.max(1)).max(1)
}

/// Ask for the cache lines of `data[at..at + len]` (clamped to `data`).
#[inline]
pub(crate) fn prefetch(data: &[u8], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let end = at.saturating_add(len).min(data.len());
        let mut p = at;
        while p < end {
            // SAFETY: `p < data.len()`, so the address is inside `data`; a prefetch never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(p) as *const i8) };
            p += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at, len);
}
