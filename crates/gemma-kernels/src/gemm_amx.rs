//! The AMX prefill GEMM: the integer sums of the AVX-512 VNNI GEMM
//! (`gemm_packed`) computed by AMX int8 tiles (`TDPBSSD`), bit-identical to
//! it, so a prompt gives the same result whichever path a chunk takes.
//!
//! Each 16-column group has its own scale, so one tile product covers one
//! group: C[16 tokens × 16 rows] (i32) = A[16 tokens × 16 columns] (i8
//! levels) · B[16 columns × 16 rows] (i8, `q − offset`): signed × signed, so
//! no `+128` offset and no lane start (VNNI's `Σ(x+128)(q−o) − 128·Σ(q−o)`
//! is the same integer). Tile loads and stores cost ~15 ns each here, so C
//! starts from `TILEZERO` and four C tiles are in flight. The float work is the
//! VNNI kernel's, lane by lane in the same order: per group and super-chunk
//! `acc = fma(f32(sum), ws · d16, acc)`, then the mins `acc −= wm · xs`, then
//! the 16 groups of a super-chunk-lane summed in `reduce8`'s tree. Only the
//! vectors run over the 16 rows instead of the 16 groups.
//!
//! Linux grants a process the tile state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), asked once; a
//! refusal, a CPU without AMX-INT8 or `GEMMA_NO_AMX=1` leaves the VNNI path.

#![cfg(target_arch = "x86_64")]

use crate::gemm::avx512::for_each_group;
use crate::gemm::OutPtr;
use gemma_core::DType;
use gemma_quant::act::ActKind;
use gemma_quant::levels::{unpack_levels, LevelForm};
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows of W packed and handled by one task (the tiles' 16 columns).
const ROWS_PER_TASK: usize = 16;
/// Tokens per tile (the tiles' 16 rows).
const TB: usize = 16;

/// Whether the AMX GEMM runs here: AMX-TILE and AMX-INT8 on the CPU, the
/// tile state granted by the kernel, the VNNI path on, and no `GEMMA_NO_AMX`.
pub fn has_amx() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| crate::gemm::has_avx512_vnni() && std::env::var_os("GEMMA_NO_AMX").is_none() && cpu_has_amx_int8() && request_tile_state())
}

/// Whether the bf16 AMX GEMM runs here: [`has_amx`] and AMX-BF16 (CPUID
/// leaf 7, EDX bit 22).
#[allow(unused_unsafe)] // CPUID is safe to call since Rust 1.87, unsafe before
pub fn has_amx_bf16() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    // SAFETY: has_amx checked leaf 7 exists.
    // AVX-512VL too: the input-gradient packing uses 256-bit masked loads.
    *HAS.get_or_init(|| has_amx() && unsafe { __cpuid_count(7, 0) }.edx & (1 << 22) != 0 && is_x86_feature_detected!("avx512vl"))
}

/// CPUID leaf 7: AMX-TILE (EDX bit 24) and AMX-INT8 (bit 25), with the OS
/// saving the tile state (XCR0 bits 17 and 18).
#[allow(unused_unsafe)] // CPUID is safe to call since Rust 1.87, unsafe before
fn cpu_has_amx_int8() -> bool {
    // SAFETY: CPUID is available on every x86-64 CPU.
    let max = unsafe { __cpuid(0) }.eax;
    if max < 7 {
        return false;
    }
    // SAFETY: as above; leaf 7 exists (checked).
    let l7 = unsafe { __cpuid_count(7, 0) };
    let cpu = l7.edx & (1 << 24) != 0 && l7.edx & (1 << 25) != 0;
    // SAFETY: CPUID leaf 1 ECX bit 27 (OSXSAVE) says XGETBV is usable.
    let osxsave = unsafe { __cpuid(1) }.ecx & (1 << 27) != 0;
    // SAFETY: XGETBV(0) is allowed when OSXSAVE is set (checked first).
    cpu && osxsave && unsafe { _xgetbv(0) } & (0b11 << 17) == 0b11 << 17
}

/// Ask Linux for the tile data state once per process; false where refused.
fn request_tile_state() -> bool {
    #[cfg(target_os = "linux")]
    {
        const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these codes only changes the process's
        // permitted xsave features, or fails.
        let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
        let mut mask: u64 = 0;
        // SAFETY: the kernel writes one u64 at &mut mask.
        let g = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &mut mask as *mut u64) };
        r == 0 && g == 0 && mask & (1 << XFEATURE_XTILEDATA) != 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A zero-filled byte buffer whose start is 64-byte aligned: a tile row
/// that straddles two cache lines costs two (loads and stores here are
/// ~15 ns a tile already).
#[derive(Debug, Default)]
pub(crate) struct Aligned {
    v: Vec<u8>,
    off: usize,
    pub(crate) len: usize,
}

impl Aligned {
    /// Resize to `len` bytes, all zero.
    pub(crate) fn zeroed(&mut self, len: usize) {
        self.v.clear();
        self.v.resize(len + 64, 0);
        self.off = self.v.as_ptr().align_offset(64);
        self.len = len;
    }

    /// Resize to `len` bytes without clearing what an earlier use left
    /// (new memory is zero): for buffers the caller writes in full.
    pub(crate) fn reuse(&mut self, len: usize) {
        if self.v.len() < len + 64 {
            self.zeroed(len);
        }
        self.len = len;
    }

    pub(crate) fn ptr(&self) -> *const u8 {
        self.v[self.off..].as_ptr()
    }

    pub(crate) fn mut_ptr(&mut self) -> *mut u8 {
        self.v[self.off..].as_mut_ptr()
    }
}

/// Activations in tile order: token blocks of 16, then groups.
#[derive(Debug, Default)]
struct AmxActs {
    /// Token blocks of [`TB`].
    nb: usize,
    /// Padded columns (a multiple of 256).
    cp: usize,
    /// Levels (i8), `[nb, cp/16 items (see `item_of`), TB, 16]`.
    xu: Aligned,
    /// Scale of each group, `[nb, cp/16, TB]`.
    d16: Vec<f32>,
    /// `scale · Σ levels` of each group, `[nb, cp/16, TB]`.
    xs: Vec<f32>,
}

/// One task's rows in tile order.
#[derive(Debug, Default)]
struct AmxRows {
    /// `q − offset` as i8, `[cp/16 items, 4, 16 rows, 4]`: each group a B tile.
    wq: Aligned,
    /// Per group, over the 16 rows: scales and mins, `[cp/16, 16]`.
    ws: Vec<f32>,
    wm: Vec<f32>,
    /// The task's rows in natural order (levels, scales, mins) before packing, `[16, cols]`.
    nq: Vec<u8>,
    ns: Vec<f32>,
    nm: Vec<f32>,
    /// The C tiles stored for the float work, two sets of four (`[2, 4, TB, 16]`).
    c: Aligned,
    /// Each group's float sums of a token block, `[16 lanes, TB, 16 rows]`.
    f: Aligned,
}

thread_local! {
    static ACTS: RefCell<AmxActs> = RefCell::new(AmxActs::default());
    static ROWS: RefCell<AmxRows> = RefCell::new(AmxRows::default());
}

/// Where group `g` of `16 · nsc` sits in the tile stream: lane-major (a
/// lane's super-chunks in turn, the order the kernel takes them), so the
/// tile loads walk memory in sequence.
#[inline]
fn item_of(g: usize, nsc: usize) -> usize {
    (g % 16) * nsc + g / 16
}

/// Quantize `x: [n, cols]` as `gemm::quantize_acts_ref` does, into tile order.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn quantize(x: &[f32], n: usize, cols: usize, kind: ActKind, out: &mut AmxActs) {
    let nb = n.div_ceil(TB);
    let cp = cols.div_ceil(256) * 256;
    let ngp = cp / 16;
    out.nb = nb;
    out.cp = cp;
    out.xu.zeroed(nb * cp * TB);
    for v in [&mut out.d16, &mut out.xs] {
        v.clear();
        v.resize(nb * ngp * TB, 0.0);
    }
    let (xu, nsc) = (out.xu.mut_ptr(), cp / 256);
    for_each_group(x, n, cols, kind, |t, g, bytes, d, xs| {
        let (b0, tt) = (t / TB, t % TB);
        let slot = (b0 * ngp + g) * TB + tt;
        // SAFETY: the item's slot for token t lies within the nb·cp·TB bytes.
        unsafe { _mm_storeu_si128(xu.add(16 * ((b0 * ngp + item_of(g, nsc)) * TB + tt)) as *mut __m128i, bytes) };
        out.d16[slot] = d;
        out.xs[slot] = xs;
    });
}

/// Pack the task's rows from their natural-order levels (`p.nq`: `[16,
/// cols]`, rows past the task's zero): B tile of group `g` at `256·item`,
/// unit `k` of row `r` at `+ 64·k + 4·r`. Per group, four gathers take unit
/// `k` of the 16 rows, so the writes run in sequence (a row at a time would
/// touch every cache line of the packed rows once per row).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pack_rows(p: &mut AmxRows, cols: usize, offset: u8) {
    let nsc = p.wq.len / (16 * 256);
    let ov = _mm512_set1_epi8(offset as i8);
    let rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(cols as i32));
    let (src, dst) = (p.nq.as_ptr(), p.wq.mut_ptr());
    for g in 0..cols / 16 {
        let out = dst.add(256 * item_of(g, nsc));
        for k in 0..4 {
            let u = _mm512_i32gather_epi32::<1>(rows, src.add(16 * g + 4 * k) as *const _);
            _mm512_store_si512(out.add(64 * k) as *mut _, _mm512_sub_epi8(u, ov));
        }
    }
    let ng = cols / 16;
    for r in 0..16 {
        for g in 0..ng {
            p.ws[16 * g + r] = p.ns[r * ng + g];
            p.wm[16 * g + r] = p.nm[r * ng + g];
        }
    }
}

/// The 64-byte tile configuration: tmm0–3 C (16 × 64 bytes), tmm4–5 A
/// (16 × 16 bytes), tmm6–7 B (4 × 64 bytes).
fn tile_config() -> [u8; 64] {
    let mut cfg = [0u8; 64];
    cfg[0] = 1; // palette 1
    let mut set = |tmm: usize, rows: u8, colsb: u16| {
        cfg[16 + 2 * tmm..18 + 2 * tmm].copy_from_slice(&colsb.to_le_bytes());
        cfg[48 + tmm] = rows;
    };
    for c in 0..4 {
        set(c, 16, 64);
    }
    set(4, 16, 16);
    set(5, 16, 16);
    set(6, 4, 64);
    set(7, 4, 64);
    cfg
}

/// Four groups' integer sums, `c_k[t][r] = Σ a_k[t][j] · b_k[j][r]`, with
/// four C tiles in flight (tiles are not renamed: one C tile would
/// serialize each load, product and store).
/// # Safety
/// Tile state configured by [`tile_config`]; each `a_k` and `b_k` 256
/// bytes; `c` 4 · 1024 bytes (`c_k` at `c + 1024·k`).
#[inline]
unsafe fn group_sums4(a: [*const u8; 4], b: [*const u8; 4], c: *mut i32) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tileloadd tmm4, [{a0} + {s16} * 1]",
            "tileloadd tmm6, [{b0} + {s64} * 1]",
            "tilezero tmm1",
            "tileloadd tmm5, [{a1} + {s16} * 1]",
            "tileloadd tmm7, [{b1} + {s64} * 1]",
            "tdpbssd tmm0, tmm4, tmm6",
            "tdpbssd tmm1, tmm5, tmm7",
            "tilezero tmm2",
            "tileloadd tmm4, [{a2} + {s16} * 1]",
            "tileloadd tmm6, [{b2} + {s64} * 1]",
            "tilezero tmm3",
            "tileloadd tmm5, [{a3} + {s16} * 1]",
            "tileloadd tmm7, [{b3} + {s64} * 1]",
            "tdpbssd tmm2, tmm4, tmm6",
            "tdpbssd tmm3, tmm5, tmm7",
            "tilestored [{c} + {s64} * 1], tmm0",
            "tilestored [{c} + {s64} * 1 + 1024], tmm1",
            "tilestored [{c} + {s64} * 1 + 2048], tmm2",
            "tilestored [{c} + {s64} * 1 + 3072], tmm3",
            a0 = in(reg) a[0], a1 = in(reg) a[1], a2 = in(reg) a[2], a3 = in(reg) a[3],
            b0 = in(reg) b[0], b1 = in(reg) b[1], b2 = in(reg) b[2], b3 = in(reg) b[3],
            c = in(reg) c, s16 = in(reg) 16usize, s64 = in(reg) 64usize,
            options(nostack),
        );
    }
}

/// The outputs of the task's 16 rows for token block `tb`, written to `out`.
/// # Safety
/// AVX-512 and AMX available, tile state configured; `p` and `a` packed for
/// the same `cp`; `out` as [`Dest`] says, written by this task alone.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)] // t indexes the accumulators and the C rows together
unsafe fn block(p: &mut AmxRows, a: &AmxActs, tb: usize, has_min: bool, out: Dest) {
    let (cp, ngp) = (a.cp, a.cp / 16);
    let (wq, ws, wm) = (p.wq.ptr(), p.ws.as_ptr(), p.wm.as_ptr());
    let xu = a.xu.ptr().add(tb * cp * TB);
    let d16 = a.d16.as_ptr().add(tb * ngp * TB);
    let xs = a.xs.as_ptr().add(tb * ngp * TB);
    let c = p.c.mut_ptr() as *mut i32;
    let f = p.f.mut_ptr() as *mut f32;
    let nsc = cp / 256;
    // Groups in lane-major order (a lane's super-chunks in turn, as VNNI's
    // lanes accumulate them), four per tile issue, software-pipelined: the
    // tile unit works on the next four while the vector units take these.
    let items = 16 * nsc;
    let issue = |j0: usize, buf: *mut i32| {
        let j: [usize; 4] = std::array::from_fn(|k| j0 + k);
        // SAFETY: every item is within cp/16, packed in p and a.
        unsafe { group_sums4(j.map(|j| xu.add(256 * j)), j.map(|j| wq.add(256 * j)), buf) };
    };
    let mut acc = [_mm512_setzero_ps(); TB];
    // The item's super-chunk and lane, counted (no division per item).
    let (mut s, mut lane) = (0, 0);
    issue(0, c);
    for j0 in (0..items).step_by(4) {
        let cur = c.add(1024 * ((j0 / 4) % 2));
        if j0 + 4 < items {
            issue(j0 + 4, c.add(1024 * ((j0 / 4 + 1) % 2)));
        }
        if j0 + 12 <= items {
            // The tile loads wait on L2 in turn: bring the issue after next into L1.
            for l in 0..16 {
                _mm_prefetch::<_MM_HINT_T0>(xu.add(256 * (j0 + 8) + 64 * l) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(wq.add(256 * (j0 + 8) + 64 * l) as *const i8);
            }
        }
        for k in 0..4 {
            let g = 16 * s + lane;
            let sw = _mm512_loadu_ps(ws.add(16 * g));
            for t in 0..TB {
                let sum = _mm512_cvtepi32_ps(_mm512_loadu_si512(cur.add(256 * k + 16 * t) as *const _));
                acc[t] = _mm512_fmadd_ps(sum, _mm512_mul_ps(sw, _mm512_set1_ps(*d16.add(g * TB + t))), acc[t]);
            }
            s += 1;
            if s == nsc {
                if has_min {
                    for s in 0..nsc {
                        let g = 16 * s + lane;
                        let m = _mm512_loadu_ps(wm.add(16 * g));
                        for t in 0..TB {
                            acc[t] = _mm512_fnmadd_ps(m, _mm512_set1_ps(*xs.add(g * TB + t)), acc[t]);
                        }
                    }
                }
                for t in 0..TB {
                    _mm512_storeu_ps(f.add((lane * TB + t) * 16), acc[t]);
                    acc[t] = _mm512_setzero_ps();
                }
                s = 0;
                lane += 1;
            }
        }
    }
    // reduce8's tree for each output: u_l = (v[l] + v[8+l]) + (v[4+l] + v[12+l]),
    // sum = (u0 + u1) + (u2 + u3), here with the rows in the vector.
    let lane = |l: usize, t: usize| _mm512_loadu_ps(f.add((l * TB + t) * 16));
    for t in 0..TB {
        let u: [__m512; 4] = std::array::from_fn(|l| _mm512_add_ps(_mm512_add_ps(lane(l, t), lane(8 + l, t)), _mm512_add_ps(lane(4 + l, t), lane(12 + l, t))));
        let sum = _mm512_add_ps(_mm512_add_ps(u[0], u[1]), _mm512_add_ps(u[2], u[3]));
        if t < out.tokens {
            // SAFETY: token t of this block is in y (t < tokens) with its rows r0..r0 + valid.
            _mm512_mask_storeu_ps(out.y.ptr().add(t * out.stride), out.mask, sum);
        }
    }
}

/// Where a block's outputs go: `y` at the block's first token and the task's
/// first row, `stride` floats a token, `tokens` valid tokens, `mask` valid rows.
#[derive(Clone, Copy)]
struct Dest {
    y: OutPtr,
    stride: usize,
    tokens: usize,
    mask: __mmask16,
}

/// Load the tile configuration on this thread.
/// # Safety
/// AMX available and the tile state granted ([`has_amx`]).
pub(crate) unsafe fn configure(cfg: &[u8; 64]) {
    // SAFETY: cfg is a valid palette-1 configuration of 64 bytes.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack)) };
}

/// `y = x · wᵀ` for raw weight rows `data` (`rows` of `rb` bytes, `cols`
/// columns of `dtype`, level form `form`, activations `kind`), bit-identical
/// to `gemm_packed::gemm`.
/// # Safety
/// [`has_amx`] true; `cols` a multiple of 64 (of 256 for Q8_K activations);
/// `x: [n, cols]`, `y: [n, rows]`, `data` holds `rows · rb` bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(x: &[f32], n: usize, dtype: DType, form: LevelForm, kind: ActKind, data: &[u8], rows: usize, cols: usize, y: &mut [f32]) {
    let rb = dtype.bytes_for(cols);
    ACTS.with(|acts| {
        let acts = &mut *acts.borrow_mut();
        // SAFETY: AVX-512 VNNI available (has_amx implies it).
        unsafe { quantize(x, n, cols, kind, acts) };
        let acts = &*acts;
        let cp = acts.cp;
        let ngp = cp / 16;
        let out = OutPtr(y.as_mut_ptr());
        let simd_fill = crate::vnni::supports(dtype);
        let cfg = tile_config();
        crate::pool::parallel_for(rows.div_ceil(ROWS_PER_TASK), &|task| {
            ROWS.with(|p| {
                let p = &mut *p.borrow_mut();
                let r0 = task * ROWS_PER_TASK;
                let nr = ROWS_PER_TASK.min(rows - r0);
                if p.wq.len != cp * 16 {
                    // Padding groups stay zero; pack_rows writes every other byte.
                    p.wq.zeroed(cp * 16);
                }
                for v in [&mut p.ws, &mut p.wm] {
                    v.clear();
                    v.resize(ngp * 16, 0.0);
                }
                let ng = cols / 16;
                for (v, len) in [(&mut p.ns, 16 * ng), (&mut p.nm, 16 * ng)] {
                    v.clear();
                    v.resize(len, 0.0);
                }
                p.nq.clear();
                p.nq.resize(16 * cols, 0);
                if p.c.len == 0 {
                    p.c.zeroed(2 * 4 * TB * 16 * 4);
                    p.f.zeroed(16 * TB * 16 * 4);
                }
                for i in 0..nr {
                    let row = &data[(r0 + i) * rb..(r0 + i + 1) * rb];
                    if simd_fill {
                        // SAFETY: AVX-512 VNNI available (has_amx); buffers sized above.
                        unsafe { crate::vnni::fill_row(dtype, row, &mut p.nq[i * cols..(i + 1) * cols], &mut p.ns[i * ng..(i + 1) * ng], &mut p.nm[i * ng..(i + 1) * ng]) };
                    } else {
                        unpack_levels(dtype, row, &mut p.nq[i * cols..(i + 1) * cols], &mut p.ns[i * ng..(i + 1) * ng], &mut p.nm[i * ng..(i + 1) * ng]);
                    }
                }
                // SAFETY: AVX-512 available (has_amx); buffers sized above.
                unsafe { pack_rows(p, cols, form.offset) };
                // SAFETY: AMX granted (caller); the configuration is valid.
                unsafe { configure(&cfg) };
                for tb in 0..acts.nb {
                    // Written straight from the vectors, masked (a copy call per
                    // token was 12% of a 4B prefill).
                    let dest = Dest {
                        // SAFETY: (tb·TB, r0) is in y: tb·TB < n and r0 < rows.
                        y: OutPtr(unsafe { out.ptr().add(tb * TB * rows + r0) }),
                        stride: rows,
                        tokens: (n - tb * TB).min(TB),
                        mask: ((1u32 << nr) - 1) as __mmask16,
                    };
                    // SAFETY: p and acts were packed above for the same cp; dest
                    // covers tokens and rows of y that this task alone writes.
                    unsafe { block(p, acts, tb, form.has_min, dest) };
                }
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::tensor::ALL_DTYPES;
    use gemma_quant::act::act_kind;
    use gemma_quant::levels::level_form;

    /// Every type with a level form, odd row counts, token counts around the
    /// 16-token tiles, padded columns: AMX equals the VNNI GEMM bit for bit
    /// (which `gemm::tests` checks against the scalar reference).
    #[test]
    fn amx_equals_the_vnni_gemm_bit_for_bit() {
        if !has_amx() {
            eprintln!("no AMX-INT8 here (or GEMMA_NO_AMX): skipped");
            return;
        }
        for (dt, cols) in ALL_DTYPES.iter().flat_map(|&dt| [(dt, 256usize), (dt, 640), (dt, 1152)]) {
            let (Some(form), Some(kind)) = (level_form(dt), act_kind(dt)) else { continue };
            if !cols.is_multiple_of(dt.block_size()) || (kind == ActKind::Q8K && !cols.is_multiple_of(256)) {
                continue;
            }
            let rows = 35;
            let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.45) * 0.2).collect();
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &w, &mut raw).unwrap();
            for n in [1, 15, 16, 17, 40] {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * (1.0 + (i % 5) as f32)).collect();
                let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                // SAFETY: has_amx implies AVX-512 VNNI; shapes checked above.
                unsafe {
                    crate::gemm_packed::gemm(&x, n, dt, form, kind, &raw, rows, cols, &mut want);
                    gemm(&x, n, dt, form, kind, &raw, rows, cols, &mut got);
                }
                let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{dt} cols={cols} n={n}: {:?} vs {:?}", &got[..4], &want[..4]);
            }
        }
    }
}
