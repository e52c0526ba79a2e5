//! Software prefetch of the weight rows a decode task reads next. Decoding
//! streams every weight once per token, each task one contiguous run of rows.
//! Two levels: `prefetcht1` 4 KiB ahead brings the lines into L2, and
//! `prefetcht0` 1 KiB ahead moves them on into L1. One level (`prefetcht0`
//! of the row 4 KiB ahead, as before 2026-12-07) stalled on the core's
//! line-fill buffers: perf put 36% of a 4B decode on the prefetch
//! instruction itself. On the 2-core Xeon with AMX, alternating: Gemma 3 4B
//! Q4_K_M tg32 6.4–6.5 → 7.7–7.8 t/s, 1B 18.5–18.9 → 22.6–22.9, the 270M
//! 54 → 69–72, the 1B at `--dtype bf16` (owned rows, no prefetch before)
//! 9.0 → 10.2–10.5; the AVX2 path on the 1B 16.8–17.2 → 21.9–22.3; the 12B
//! unchanged (2.54–2.57 vs 2.55–2.57). `GEMMA_PF_NEAR` and `GEMMA_PF_FAR`
//! (bytes, 0 = off) override the distances, to tune them on another machine.

/// How far ahead of the row being computed its task's bytes are requested
/// into L1 (`prefetcht0`) ...
pub(crate) const NEAR: usize = 1024;
/// ... and, earlier, into L2 (`prefetcht1`): the L1 requests then mostly hit
/// L2, and fewer of them wait for a line-fill buffer.
pub(crate) const FAR: usize = 4096;

/// The distances, from `GEMMA_PF_NEAR` / `GEMMA_PF_FAR` when set.
static KNOBS: std::sync::LazyLock<(usize, usize)> = std::sync::LazyLock::new(|| {
    let g = |k: &str, d| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    (g("GEMMA_PF_NEAR", NEAR), g("GEMMA_PF_FAR", FAR))
});

/// Request the `len` elements a row-streaming task reads after those at
/// `at`: [`NEAR`] bytes ahead into L1 and [`FAR`] bytes ahead into L2.
/// `data` ends where the task's rows end (nothing beyond is requested).
#[inline]
pub(crate) fn stream_ahead<T>(data: &[T], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1};
        let size = std::mem::size_of::<T>();
        let (base, total, at, len) = (data.as_ptr() as *const u8, std::mem::size_of_val(data), at * size, len * size);
        let (near, far) = *KNOBS;
        if near > 0 {
            lines::<_MM_HINT_T0>(base, total, at + near, len);
        }
        if far > 0 {
            lines::<_MM_HINT_T1>(base, total, at + far, len);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at, len);
}

/// Ask for the cache lines of bytes `at..at + len` (clamped to `total`) of
/// the `total` bytes at `base`, with hint `HINT`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn lines<const HINT: i32>(base: *const u8, total: usize, at: usize, len: usize) {
    let end = at.saturating_add(len).min(total);
    let mut p = at;
    while p < end {
        // SAFETY: `p < total`, so the address is inside the caller's slice; a prefetch never faults.
        unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(base.add(p) as *const i8) };
        p += 64;
    }
}
