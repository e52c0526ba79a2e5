//! `y = x · Wᵀ` for a weight matrix of any stored dtype, split by rows of W
//! over the rayon pool.

use crate::dot::{dot_bf16, dot_f16, dot_f32};
use crate::gemm::OutPtr;
use crate::qdot::{dot_q8_multi, RowDot, MULTI};
use gemma_core::{DType, Matrix, Storage};
use gemma_quant::act::{act_kind, ActQ8};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Elements dequantized at a time by the block-wise dot (a multiple of
/// every block size).
const CHUNK: usize = 256;

/// `x · row` for a row of raw elements (`x.len()` of them), dequantizing one
/// chunk at a time into a stack buffer: the weights are never expanded.
/// Used for float rows kept in a memory map.
pub fn dot_blocks(dtype: gemma_core::DType, row: &[u8], x: &[f32]) -> f32 {
    // Float rows of a memory map: the SIMD float kernels read them in place
    // (dequantizing them into a buffer first cost 10x at decode).
    match dtype {
        gemma_core::DType::BF16 => {
            // SAFETY: bf16 is a u16 newtype; every bit pattern is a value, and align_to only yields aligned elements.
            if let ([], w, []) = unsafe { row.align_to::<half::bf16>() } {
                return dot_bf16(x, w);
            }
        }
        gemma_core::DType::F16 => {
            // SAFETY: f16 is a u16 newtype; every bit pattern is a value, and align_to only yields aligned elements.
            if let ([], w, []) = unsafe { row.align_to::<half::f16>() } {
                return dot_f16(x, w);
            }
        }
        gemma_core::DType::F32 => {
            // SAFETY: every bit pattern is an f32, and align_to only yields aligned elements.
            if let ([], w, []) = unsafe { row.align_to::<f32>() } {
                return dot_f32(x, w);
            }
        }
        _ => {}
    }
    let mut buf = [0f32; CHUNK];
    let mut sum = 0.0;
    let per = dtype.bytes_for(CHUNK);
    for (i, xc) in x.chunks(CHUNK).enumerate() {
        let n = xc.len();
        let b0 = i * per;
        gemma_quant::dequantize(dtype, &row[b0..b0 + dtype.bytes_for(n)], &mut buf[..n]);
        sum += dot_f32(xc, &buf[..n]);
    }
    sum
}

thread_local! {
    /// One dequantized weight row, reused across the tokens of a prefill.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows of W handled by one task.
const ROWS_PER_TASK: usize = 16;

/// Tokens whose quantized activations a task runs over all its rows before
/// the next ones (a multiple of [`MULTI`]; 64 tokens of a 2560-wide model:
/// 160 KB, the size of a core's L2).
const TOKEN_TILE: usize = 64;

/// `y[t, r] = x[t, :] · w[r, :]` with `x: [n, w.cols]`, `y: [n, w.rows]`.
pub fn matmul(x: &[f32], n: usize, w: &Matrix, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    assert_eq!(x.len(), n * cols, "matmul input has the wrong length");
    assert_eq!(y.len(), n * rows, "matmul output has the wrong length");
    if n == 0 || rows == 0 {
        return;
    }
    // Many tokens and a quantized weight: the cache-blocked integer GEMM.
    if n >= crate::gemm::MIN_TOKENS && crate::gemm::gemm_quant(x, n, w, y, false) {
        return;
    }
    // A few tokens (decoding): matrix-vector kernels unpacking in registers.
    #[cfg(target_arch = "x86_64")]
    if n < crate::gemm::MIN_TOKENS && crate::gemv_packed::matmul(x, n, w, y) {
        return;
    }
    // Many tokens and bf16 weights on AMX-BF16: bf16 activations, f32 sums.
    #[cfg(target_arch = "x86_64")]
    if n >= crate::gemm::MIN_TOKENS && crate::gemm_amx_bf16::gemm(x, n, w, y, false) {
        return;
    }
    // The same numerics on AVX512-BF16 (`vdpbf16ps`) where AMX is absent.
    #[cfg(target_arch = "x86_64")]
    if n >= crate::gemm::MIN_TOKENS && crate::gemm_bf16_dp::gemm(x, n, w, y, false) {
        return;
    }
    // Many tokens and float weights: rows converted to f32 once, then a
    // register-tiled f32 product.
    if n >= crate::gemm::MIN_TOKENS && float_gemm(x, n, w, y) {
        return;
    }
    MATMUL.with(|m| {
        let (acts, yt) = &mut *m.borrow_mut();
        matmul_rows(x, n, w, y, acts, yt, false)
    });
}

/// As [`matmul`], but every token's output is computed exactly as it would
/// be alone (`n = 1`), bit for bit: the kernel never depends on how many
/// tokens share the call. Batched decoding uses this so that a sequence's
/// result does not depend on the batch around it.
pub fn matmul_decode(x: &[f32], n: usize, w: &Matrix, y: &mut [f32]) {
    assert_eq!(x.len(), n * w.cols, "matmul input has the wrong length");
    assert_eq!(y.len(), n * w.rows, "matmul output has the wrong length");
    if n == 0 || w.rows == 0 {
        return;
    }
    // Decode tokens share each unpacked weight chunk, each token computed
    // exactly as alone.
    #[cfg(target_arch = "x86_64")]
    if crate::gemv_packed::matmul(x, n, w, y) {
        return;
    }
    MATMUL.with(|m| {
        let (acts, yt) = &mut *m.borrow_mut();
        matmul_rows(x, n, w, y, acts, yt, true)
    });
}

thread_local! {
    /// f32 weight rows and a tile of outputs, per worker.
    static FLOAT_ROWS: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = RefCell::new(Default::default());
}

/// The prefill product for float weights (f32, bf16, f16, in memory or
/// memory-mapped): each task converts [`FLOAT_ROWS_PER_TASK`] rows to f32 once,
/// transposed, and multiplies every token with them
/// ([`crate::gemm_nn::gemm_nn`], the broadcast kernel). Returns
/// false for quantized weights.
fn float_gemm(x: &[f32], n: usize, w: &Matrix, y: &mut [f32]) -> bool {
    float_gemm_any(x, n, w, y, false)
}

/// `y = x·Wᵀ` with f32 activations for every weight type: quantized rows
/// are dequantized (16 per task) and multiplied in f32, which is the
/// product transformers computes on the dequantized weights (the training
/// forward uses it, as bitsandbytes' QLoRA dequantizes for compute, while
/// inference meets quantized weights with 8-bit activations as llama.cpp).
pub fn matmul_f32_acts(x: &[f32], n: usize, w: &Matrix, y: &mut [f32]) {
    assert_eq!(x.len(), n * w.cols, "matmul input has the wrong length");
    assert_eq!(y.len(), n * w.rows, "matmul output has the wrong length");
    if n == 0 || w.rows == 0 || float_gemm_any(x, n, w, y, true) {
        return;
    }
    let mut row = vec![0f32; w.cols];
    for r in 0..w.rows {
        gemma_quant::read_f32(&w.storage, r * w.cols, &mut row);
        for t in 0..n {
            y[t * w.rows + r] = crate::dot::dot_f32(&x[t * w.cols..(t + 1) * w.cols], &row);
        }
    }
}

/// Whether training multiplies quantized weights in bf16 (see
/// [`set_quantized_training_bf16`]).
static QUANT_TRAIN_BF16: AtomicBool = AtomicBool::new(false);

/// QLoRA's compute dtype, for the whole process: on (bitsandbytes'
/// `bnb_4bit_compute_dtype=bfloat16`, the usual QLoRA recipe), training
/// products with a quantized weight dequantize it to bf16 and meet
/// bf16-rounded activations and gradients on AMX-BF16 tiles (on
/// AVX512-BF16 without AMX, the forward only); off (the default, and
/// always on CPUs with neither) they run in f32 on the dequantized weight.
/// `gemma finetune --compute-dtype` sets it.
pub fn set_quantized_training_bf16(on: bool) {
    QUANT_TRAIN_BF16.store(on, Ordering::Relaxed);
}

/// See [`set_quantized_training_bf16`].
pub fn quantized_training_bf16() -> bool {
    QUANT_TRAIN_BF16.load(Ordering::Relaxed)
}

/// The training product: a bf16 weight as the prefill GEMM multiplies it
/// (bf16-rounded activations on AMX-BF16 or AVX512-BF16, as PyTorch's bf16 layers do), a
/// quantized one the same way after dequantizing to bf16 where
/// [`set_quantized_training_bf16`] is on, every other case with f32
/// activations ([`matmul_f32_acts`]).
/// Every path it takes gives each row the same result whatever `n` (no
/// decode kernels here), so a product recomputed over other rows (the
/// MoE's experts, a backward) equals the forward's bit for bit.
pub fn matmul_train(x: &[f32], n: usize, w: &Matrix, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::gemm_amx_bf16::gemm(x, n, w, y, quantized_training_bf16()) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::gemm_bf16_dp::gemm(x, n, w, y, quantized_training_bf16()) {
        return;
    }
    matmul_f32_acts(x, n, w, y);
}

/// Weight rows per task of [`float_gemm`]: every task reads all the
/// tokens' activations once, so wide tasks read them few times (64 rows:
/// the transposed f32 block of a 4304-wide row set is 1.1 MB, passed in
/// 256-step slices), while wide models still give every thread many tasks.
const FLOAT_ROWS_PER_TASK: usize = 64;
/// Tokens per pass of a [`float_gemm`] task (their activations, up to
/// 128 × 256 values per slice, stay in L2).
const FLOAT_TOKENS_PER_PASS: usize = 128;

/// The f32 product of [`float_gemm`]; with `quantized` also for block types.
fn float_gemm_any(x: &[f32], n: usize, w: &Matrix, y: &mut [f32], quantized: bool) -> bool {
    let (rows, cols) = (w.rows, w.cols);
    let raw_ok = matches!(&w.storage, Storage::Raw { dtype, .. } if dtype.block_size() == 1 || quantized);
    if !(matches!(w.storage, Storage::F32(_) | Storage::BF16(_) | Storage::F16(_)) || raw_ok) {
        return false;
    }
    let out = OutPtr(y.as_mut_ptr());
    // Few row blocks (a LoRA factor's 16 rows over hundreds of tokens): the
    // tokens are split too, so every thread has work (each token's outputs
    // are the same whichever task computes them).
    let (row_tasks, threads) = (rows.div_ceil(FLOAT_ROWS_PER_TASK), crate::pool::global().threads());
    let splits = if row_tasks >= 2 * threads { 1 } else { (2 * threads).div_ceil(row_tasks).min(n.div_ceil(16)).max(1) };
    let per = n.div_ceil(splits);
    crate::pool::parallel_for(row_tasks * splits, &|task| {
        let (r0, t_lo) = ((task / splits) * FLOAT_ROWS_PER_TASK, (task % splits) * per);
        let (nr, t_hi) = (FLOAT_ROWS_PER_TASK.min(rows - r0), (t_lo + per).min(n));
        if t_lo >= t_hi {
            return;
        }
        FLOAT_ROWS.with(|b| {
            let (wf, tile, wt) = &mut *b.borrow_mut();
            wf.resize(nr * cols, 0.0);
            let range = r0 * cols..(r0 + nr) * cols;
            let wrows: &[f32] = match &w.storage {
                Storage::F32(v) => &v[range],
                Storage::BF16(v) => {
                    half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[range], &mut wf[..nr * cols]);
                    &wf[..nr * cols]
                }
                Storage::F16(v) => {
                    half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[range], &mut wf[..nr * cols]);
                    &wf[..nr * cols]
                }
                Storage::Raw { dtype, bytes, .. } => {
                    let rb = w.row_bytes();
                    gemma_quant::dequantize(*dtype, &bytes.as_slice()[r0 * rb..(r0 + nr) * rb], &mut wf[..nr * cols]);
                    &wf[..nr * cols]
                }
            };
            // The rows transposed, `[cols, nr]`: the broadcast kernel's `B`.
            wt.resize(cols * nr, 0.0);
            for (r, row) in wrows.chunks_exact(cols).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    wt[c * nr + r] = v;
                }
            }
            // Tokens a pass at a time, so a pass's activations stay in L2
            // while every column block of the rows goes over them.
            tile.resize(FLOAT_TOKENS_PER_PASS.min(n) * nr, 0.0);
            for t0 in (t_lo..t_hi).step_by(FLOAT_TOKENS_PER_PASS) {
                let tn = FLOAT_TOKENS_PER_PASS.min(t_hi - t0);
                crate::gemm_nn::gemm_nn(&x[t0 * cols..(t0 + tn) * cols], tn, cols, &wt[..cols * nr], nr, &mut tile[..tn * nr]);
                for t in 0..tn {
                    // SAFETY: row run r0..r0+nr of token t0+t belongs to this task alone.
                    unsafe { std::ptr::copy_nonoverlapping(tile[t * nr..].as_ptr(), out.ptr().add((t0 + t) * rows + r0), nr) };
                }
            }
        });
    });
    true
}

/// Rows per task of [`matmul_rows`]: [`ROWS_PER_TASK`] for many tokens (a
/// task's rows stay in cache across a token tile); for up to
/// [`TOKEN_TILE`] tokens, where each row is read once, long contiguous runs
/// — four per thread — so that each thread streams long sequential
/// stretches the hardware prefetcher follows (16-row tasks dealt out in
/// turn gave each of 2 threads a pattern of 23 KB pieces with gaps).
fn rows_per_task(rows: usize, n: usize) -> usize {
    if n > TOKEN_TILE {
        return ROWS_PER_TASK;
    }
    rows.div_ceil(4 * crate::pool::global().threads()).max(ROWS_PER_TASK)
}

thread_local! {
    /// Quantized activations and the transposed output, reused across calls.
    static MATMUL: RefCell<(Vec<ActQ8>, Vec<f32>)> = RefCell::new(Default::default());
}

/// The per-row kernels (any dtype, any CPU).
/// `per_token`: compute each token as if alone (no multi-token kernels).
fn matmul_rows(x: &[f32], n: usize, w: &Matrix, y: &mut [f32], acts: &mut Vec<ActQ8>, yt: &mut Vec<f32>, per_token: bool) {
    let (rows, cols) = (w.rows, w.cols);
    // Quantized weights meet 8-bit activations (as llama.cpp): quantize
    // each token's activations once.
    let kind = match &w.storage {
        Storage::Raw { dtype, .. } => act_kind(*dtype),
        _ => None,
    };
    let nacts = if kind.is_some() { n } else { 0 };
    if acts.len() < nacts {
        acts.resize_with(nacts, ActQ8::default);
    }
    if let Some(kind) = kind {
        if n >= 2 {
            // Prefill: the tokens' quantization in parallel (serial, it kept
            // the other threads waiting for a tenth of the prefill).
            let ap = ActsPtr(acts.as_mut_ptr());
            crate::pool::parallel_for(n, &|t| {
                // SAFETY: t < n <= acts.len(), and index t is handled by this task alone.
                let a = unsafe { &mut *ap.ptr().add(t) };
                a.quantize(kind, &x[t * cols..(t + 1) * cols]);
            });
        } else {
            for (a, xt) in acts.iter_mut().zip(x.chunks_exact(cols)) {
                a.quantize(kind, xt);
            }
        }
    }
    let acts = &acts[..nacts];
    // Per matrix, not per row: the kernel, the row size, the bytes.
    let rb = w.row_bytes();
    let (data, rowdot) = match &w.storage {
        Storage::Raw { dtype, bytes, .. } => (bytes.as_slice(), Some(RowDot::new(*dtype, cols, acts))),
        _ => (&[][..], None),
    };
    // yt: [rows, n], so each task owns a contiguous slice of it.
    yt.resize(rows * n, 0.0);
    let yt = &mut yt[..rows * n];
    let base = OutPtr(yt.as_mut_ptr());
    let yp = OutPtr(y.as_mut_ptr());
    let per_task = rows_per_task(rows, n);
    crate::pool::parallel_for(rows.div_ceil(per_task), &|task| {
        let r0 = task * per_task;
        let nr = per_task.min(rows - r0);
        // SAFETY: rows r0..r0+nr of yt ([rows, n]) belong to this task alone.
        let out = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(r0 * n), nr * n) };
        if let (Storage::Raw { dtype, .. }, Some(rowdot), false) = (&w.storage, &rowdot, acts.is_empty()) {
            // Token tiles outer, the task's rows inner: a tile's activations
            // stay in cache across the rows (row by row, every row streamed
            // all tokens' activations from the last-level cache).
            let per = if per_token { 1 } else { MULTI };
            for t0 in (0..n).step_by(TOKEN_TILE) {
                let tn = TOKEN_TILE.min(n - t0);
                for (i, out_row) in out.chunks_mut(n).enumerate() {
                    let r = r0 + i;
                    let row = &data[r * rb..(r + 1) * rb];
                    if t0 == 0 {
                        crate::prefetch::stream_ahead(&data[..(r0 + nr) * rb], r * rb, rb);
                    }
                    for (os, group) in out_row[t0..t0 + tn].chunks_mut(per).zip(acts[t0..t0 + tn].chunks(per)) {
                        if group.len() == 1 {
                            os[0] = rowdot.dot(row, &group[0]);
                        } else {
                            let refs: [&ActQ8; MULTI] = std::array::from_fn(|i| &group[i.min(group.len() - 1)]);
                            dot_q8_multi(*dtype, row, &refs[..group.len()], os);
                        }
                    }
                }
            }
        }
        for (i, out_row) in out.chunks_mut(n).enumerate() {
            if !acts.is_empty() {
                break;
            }
            let r = r0 + i;
            let range = r * cols..(r + 1) * cols;
            let task_end = (r0 + nr) * cols;
            match &w.storage {
                Storage::F32(v) => crate::prefetch::stream_ahead(&v[..task_end], range.start, cols),
                Storage::BF16(v) => crate::prefetch::stream_ahead(&v[..task_end], range.start, cols),
                Storage::F16(v) => crate::prefetch::stream_ahead(&v[..task_end], range.start, cols),
                Storage::Raw { .. } => {}
            }
            // bf16 rows, in memory or mapped (decode steps of several
            // tokens, verify steps): four tokens per pass over the row, each
            // as alone.
            let mut first = 0;
            let bf16_row = match &w.storage {
                Storage::BF16(v) => Some(&v[range.clone()]),
                // SAFETY: bf16 is a u16 newtype; every bit pattern is a value, and align_to only yields aligned elements.
                Storage::Raw { dtype: DType::BF16, .. } => match unsafe { data[r * rb..(r + 1) * rb].align_to::<half::bf16>() } {
                    ([], wr, []) => Some(wr),
                    _ => None,
                },
                _ => None,
            };
            if let Some(wr) = bf16_row {
                // Two or three left: one more pass, the last token repeated.
                while n - first >= 2 {
                    let xs: [&[f32]; 4] = std::array::from_fn(|k| {
                        let t = (first + k).min(n - 1);
                        &x[t * cols..(t + 1) * cols]
                    });
                    let take = (n - first).min(4);
                    out_row[first..first + take].copy_from_slice(&crate::dot::dot_bf16_x4(xs, wr)[..take]);
                    first += take;
                }
            }
            for (t, o) in out_row.iter_mut().enumerate().skip(first) {
                let xt = &x[t * cols..(t + 1) * cols];
                *o = match &w.storage {
                    Storage::F32(v) => dot_f32(xt, &v[range.clone()]),
                    Storage::BF16(v) => dot_bf16(xt, &v[range.clone()]),
                    Storage::F16(v) => dot_f16(xt, &v[range.clone()]),
                    Storage::Raw { .. } => break,
                };
            }
            if let (Storage::Raw { dtype, .. }, Some(_)) = (&w.storage, &rowdot) {
                let row = &data[r * rb..(r + 1) * rb];
                crate::prefetch::stream_ahead(&data[..(r0 + nr) * rb], r * rb, rb);
                if n == 1 || per_token {
                    for (t, o) in out_row.iter_mut().enumerate().skip(first) {
                        *o = dot_blocks(*dtype, row, &x[t * cols..(t + 1) * cols]);
                    }
                } else {
                    // Dequantize the row once, then dot it with every token.
                    ROW.with(|buf| {
                        let mut buf = buf.borrow_mut();
                        buf.resize(cols, 0.0);
                        gemma_quant::dequantize(*dtype, row, &mut buf);
                        for (t, o) in out_row.iter_mut().enumerate().skip(first) {
                            *o = dot_f32(&x[t * cols..(t + 1) * cols], &buf);
                        }
                    });
                }
            }
        }
        // This task's rows of y ([n, rows]), from its slice of yt ([rows, n]).
        for (i, vals) in out.chunks(n).enumerate() {
            for (t, &v) in vals.iter().enumerate() {
                // SAFETY: (t, r0 + i) is inside y; rows r0..r0+nr belong to this task alone.
                unsafe { yp.write(t * rows + r0 + i, v) };
            }
        }
    });
}

/// The activations of a matmul, shared with the tasks that quantize them.
struct ActsPtr(*mut ActQ8);
// SAFETY: every task touches only its own token's element.
unsafe impl Send for ActsPtr {}
unsafe impl Sync for ActsPtr {}

impl ActsPtr {
    /// The pointer (a method, so closures capture the Sync wrapper).
    fn ptr(&self) -> *mut ActQ8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::tensor::ALL_DTYPES;
    use gemma_core::DType;

    /// Every weight type, for one token and for several: equal to the
    /// reference dot of gemma-quant over the same blocks.
    #[test]
    fn block_matmul_matches_reference_for_every_type() {
        let (rows, cols) = (19, 512);
        let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.2).collect();
        let x: Vec<f32> = (0..3 * cols).map(|i| (i * 31 % 97) as f32 / 97.0 - 0.5).collect();
        for dt in ALL_DTYPES {
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
            let w = Matrix::new(rows, cols, Storage::Raw { dtype: dt, len: rows * cols, bytes: gemma_core::tensor::Bytes::Owned(raw.clone()) });
            for n in [1, 3] {
                let mut y = vec![0.0; n * rows];
                matmul(&x[..n * cols], n, &w, &mut y);
                for t in 0..n {
                    let xt = &x[t * cols..(t + 1) * cols];
                    for r in 0..rows {
                        let rb = dt.bytes_for(cols);
                        let wr = &raw[r * rb..(r + 1) * rb];
                        let got = y[t * rows + r];
                        // Exactly the integer reference over 8-bit activations…
                        let want = match act_kind(dt) {
                            Some(k) => {
                                let mut a = ActQ8::default();
                                a.quantize(k, xt);
                                gemma_quant::act::dot_q8_ref(dt, wr, &a)
                            }
                            None => gemma_quant::dot_ref(dt, wr, xt),
                        };
                        assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "{dt} n={n}: {got} vs {want}");
                        // …and close to the f32 dot of the dequantized weights.
                        let exact = gemma_quant::dot_ref(dt, wr, xt);
                        assert!((got - exact).abs() < 0.02 * exact.abs().max(1.0), "{dt} n={n}: {got} vs {exact}");
                    }
                }
            }
        }
    }

    /// The prefill path for float weights (many tokens), in memory and as raw
    /// (memory-mapped) bytes.
    #[test]
    fn matmul_f32_acts_is_the_dequantized_product() {
        let (rows, cols) = (70, 256);
        let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        for dt in [DType::Q4_K, DType::Q8_0, DType::Q5_0, DType::BF16] {
            let w = Matrix::new(rows, cols, gemma_quant::convert(Storage::F32(wv.clone()), dt).unwrap());
            let deq = gemma_quant::to_f32_vec(&w.storage);
            for n in [1, 5, 40] {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
                let mut y = vec![0f32; n * rows];
                matmul_f32_acts(&x, n, &w, &mut y);
                for t in 0..n {
                    for r in 0..rows {
                        let want: f64 = (0..cols).map(|c| x[t * cols + c] as f64 * deq[r * cols + c] as f64).sum();
                        assert!((y[t * rows + r] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "{dt:?} n={n} ({t},{r})");
                    }
                }
            }
        }
    }

    #[test]
    fn float_gemm_splits_tokens_without_changing_a_bit() {
        // 16 rows (one row block): the tokens are split across tasks.
        let (rows, cols, n) = (16, 96, 300);
        let w = Matrix::new(rows, cols, Storage::F32((0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect()));
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0 + 1e-3 * (i % 17) as f32).collect();
        let mut all = vec![0.0; n * rows];
        matmul_f32_acts(&x, n, &w, &mut all);
        for t0 in (0..n).step_by(5) {
            let mut part = vec![0.0; 5 * rows];
            matmul_f32_acts(&x[t0 * cols..(t0 + 5) * cols], 5, &w, &mut part);
            assert!(part.iter().zip(&all[t0 * rows..]).all(|(a, b)| a.to_bits() == b.to_bits()), "tokens {t0}..");
        }
    }

    #[test]
    fn float_gemm_matches_naive() {
        let (rows, cols, n) = (37, 64, 6);
        let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let stored = gemma_quant::convert(Storage::F32(wv.clone()), dt).unwrap();
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
            let raw = Storage::Raw { dtype: dt, len: rows * cols, bytes: gemma_core::tensor::Bytes::Owned(raw) };
            for storage in [stored, raw] {
                let w = Matrix::new(rows, cols, storage);
                let mut y = vec![0.0; n * rows];
                matmul(&x, n, &w, &mut y);
                for t in 0..n {
                    for r in 0..rows {
                        let want: f32 = (0..cols).map(|c| x[t * cols + c] * dt.round(wv[r * cols + c])).sum();
                        assert!((y[t * rows + r] - want).abs() < 1e-4, "{dt}: {} vs {want}", y[t * rows + r]);
                    }
                }
            }
        }
    }

    /// `matmul_decode` gives every token exactly its result alone.
    #[test]
    fn decode_matmul_is_batch_invariant() {
        let (rows, cols) = (19, 512);
        let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.2).collect();
        let x: Vec<f32> = (0..9 * cols).map(|i| (i * 31 % 97) as f32 / 97.0 - 0.5).collect();
        for dt in ALL_DTYPES {
            let mut raw = Vec::new();
            gemma_quant::quantize(dt, &wv, &mut raw).unwrap();
            for w in [
                Matrix::new(rows, cols, Storage::Raw { dtype: dt, len: rows * cols, bytes: gemma_core::tensor::Bytes::Owned(raw.clone()) }),
                Matrix::new(rows, cols, gemma_quant::convert(Storage::F32(wv.clone()), if dt.block_size() == 1 { dt } else { DType::F32 }).unwrap()),
            ] {
                // Float rows take four tokens a pass, the last pass padded.
                for n in [2, 3, 6, 9] {
                    let mut all = vec![0.0; n * rows];
                    matmul_decode(&x[..n * cols], n, &w, &mut all);
                    for t in 0..n {
                        let mut one = vec![0.0; rows];
                        matmul_decode(&x[t * cols..(t + 1) * cols], 1, &w, &mut one);
                        assert_eq!(&all[t * rows..(t + 1) * rows], &one[..], "{dt} token {t} of {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn matches_naive_for_every_dtype() {
        let (rows, cols, n) = (37, 29, 3); // odd sizes: float types only
        let wv: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let w = Matrix::new(rows, cols, gemma_quant::convert(Storage::F32(wv.clone()), dt).unwrap());
            let mut y = vec![0.0; n * rows];
            matmul(&x, n, &w, &mut y);
            for t in 0..n {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| x[t * cols + c] * dt.round(wv[r * cols + c])).sum();
                    assert!((y[t * rows + r] - want).abs() < 1e-4, "{dt}: {} vs {want}", y[t * rows + r]);
                }
            }
        }
    }
}
