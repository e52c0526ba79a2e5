//! 8-bit activation blocks and integer dot products, as llama.cpp computes
//! quantized matmuls: activations are quantized to Q8_0 (for Q4_0/Q5_0/Q8_0
//! weights), Q8_1 (Q4_1/Q5_1) or Q8_K (the k-quants), and each weight block
//! meets its activation block in integer arithmetic.
//! These are the scalar references; SIMD versions live in gemma-kernels.

use crate::f16_at;
use gemma_core::DType;
use half::f16;

/// Which activation format a weight type is multiplied with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// 32 values: scale + i8 (scale rounded to f16).
    Q8_0,
    /// 32 values: scale, scale × sum + i8 (both rounded to f16).
    Q8_1,
    /// 256 values: f32 scale + i8 + sums of each 16.
    Q8K,
}

/// The activation format for a quantized weight type (None for float types).
pub fn act_kind(w: DType) -> Option<ActKind> {
    match w {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => Some(ActKind::Q8_0),
        DType::Q4_1 | DType::Q5_1 => Some(ActKind::Q8_1),
        DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => Some(ActKind::Q8K),
        DType::F32 | DType::F16 | DType::BF16 => None,
    }
}

/// One activation row quantized to 8 bits.
#[derive(Debug, Clone, Default)]
pub struct ActQ8 {
    /// Format.
    pub kind: Option<ActKind>,
    /// Per block scale.
    pub d: Vec<f32>,
    /// Per block `d * sum(qs)` (Q8_1 only).
    pub s: Vec<f32>,
    /// The values, `[cols]`.
    pub qs: Vec<i8>,
    /// Sums of each 16 values (Q8_K only), `[cols / 16]`.
    pub bsums: Vec<i32>,
}

impl ActQ8 {
    /// Quantize `x` (a multiple of the block size of `kind`) into `self`.
    pub fn quantize(&mut self, kind: ActKind, x: &[f32]) {
        self.kind = Some(kind);
        self.d.clear();
        self.s.clear();
        self.bsums.clear();
        self.qs.resize(x.len(), 0);
        match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => {
                for (b, c) in x.chunks_exact(32).enumerate() {
                    let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
                    // As ggml's x86 quantizer: multiplier 127/amax, ties to even.
                    let d = amax / 127.0;
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    let mut sum = 0i32;
                    for (q, v) in self.qs[32 * b..32 * b + 32].iter_mut().zip(c) {
                        *q = (v * id).round_ties_even() as i8;
                        sum += *q as i32;
                    }
                    self.d.push(f16::from_f32(d).to_f32());
                    if kind == ActKind::Q8_1 {
                        self.s.push(f16::from_f32(sum as f32 * d).to_f32());
                    }
                }
            }
            ActKind::Q8K => {
                for (b, c) in x.chunks_exact(256).enumerate() {
                    let (mut amax, mut max) = (0f32, 0f32);
                    for &v in c {
                        if v.abs() > amax {
                            amax = v.abs();
                            max = v;
                        }
                    }
                    let qs = &mut self.qs[256 * b..256 * b + 256];
                    if amax == 0.0 {
                        qs.fill(0);
                        self.d.push(0.0);
                        self.bsums.extend([0; 16]);
                        continue;
                    }
                    let iscale = -127.0 / max;
                    for (q, v) in qs.iter_mut().zip(c) {
                        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
                    }
                    for g in qs.chunks_exact(16) {
                        self.bsums.push(g.iter().map(|&q| q as i32).sum());
                    }
                    self.d.push(1.0 / iscale);
                }
            }
        }
    }
}

/// 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Scalar reference: a row of weight blocks · a quantized activation row.
pub fn dot_q8_ref(w: DType, row: &[u8], a: &ActQ8) -> f32 {
    let bb = w.block_bytes();
    let mut sum = 0f32;
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        sum += match w {
            DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::Q4_1 | DType::Q5_1 => {
                let mut q = [0i8; 32];
                let (d, m) = legacy_levels(w, blk, &mut q);
                let x = &a.qs[32 * b..32 * b + 32];
                let s = d * a.d[b] * dot_i8(&q, x) as f32;
                if matches!(w, DType::Q4_1 | DType::Q5_1) {
                    s + m * a.s[b]
                } else {
                    s
                }
            }
            _ => kquant_dot(w, blk, &a.qs[256 * b..256 * b + 256], &a.bsums[16 * b..16 * b + 16], a.d[b]),
        };
    }
    sum
}

/// Integer levels of a 32-weight block; returns (scale, min).
fn legacy_levels(w: DType, b: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
    match w {
        DType::Q8_0 => {
            for j in 0..32 {
                q[j] = b[2 + j] as i8;
            }
            (f16_at(b, 0), 0.0)
        }
        DType::Q4_0 | DType::Q4_1 => {
            let (off, start) = if w == DType::Q4_0 { (8, 2) } else { (0, 4) };
            for j in 0..16 {
                q[j] = (b[start + j] & 0xF) as i8 - off;
                q[j + 16] = (b[start + j] >> 4) as i8 - off;
            }
            (f16_at(b, 0), if w == DType::Q4_1 { f16_at(b, 2) } else { 0.0 })
        }
        DType::Q5_0 | DType::Q5_1 => {
            let (off, hstart) = if w == DType::Q5_0 { (16, 2) } else { (0, 4) };
            let qh = u32::from_le_bytes([b[hstart], b[hstart + 1], b[hstart + 2], b[hstart + 3]]);
            let qs = &b[hstart + 4..hstart + 20];
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                q[j] = ((qs[j] & 0xF) | h0) as i8 - off;
                q[j + 16] = ((qs[j] >> 4) | h1) as i8 - off;
            }
            (f16_at(b, 0), if w == DType::Q5_1 { f16_at(b, 2) } else { 0.0 })
        }
        _ => unreachable!("not a 32-weight type"),
    }
}

/// One k-quant super-block · a Q8_K block (`x` 256 values, `bsums` 16).
fn kquant_dot(w: DType, b: &[u8], x: &[i8], bsums: &[i32], dx: f32) -> f32 {
    let mut vals = [0f32; 256];
    match w {
        DType::Q4_K | DType::Q5_K => {
            let (d, dmin) = (f16_at(b, 0) * dx, f16_at(b, 2) * dx);
            let sc = &b[4..16];
            let mut levels = [0i8; 256];
            // Unscaled levels via dequantize with d = 1, dmin = 0 would need
            // float; extract the integers directly.
            for c in 0..4 {
                for l in 0..32 {
                    let (lo, hi) = if w == DType::Q4_K {
                        let q = b[16 + 32 * c + l];
                        (q & 0xF, q >> 4)
                    } else {
                        let q = b[48 + 32 * c + l];
                        let h = b[16 + l];
                        ((q & 0xF) | (((h >> (2 * c)) & 1) << 4), (q >> 4) | (((h >> (2 * c + 1)) & 1) << 4))
                    };
                    levels[64 * c + l] = lo as i8;
                    levels[64 * c + 32 + l] = hi as i8;
                }
            }
            let (mut sumi, mut summ) = (0i32, 0i32);
            for j in 0..8 {
                let (s, m) = scale_min_k4(j, sc);
                sumi += s as i32 * dot_i8(&levels[32 * j..32 * j + 32], &x[32 * j..32 * j + 32]);
                summ += m as i32 * (bsums[2 * j] + bsums[2 * j + 1]);
            }
            return d * sumi as f32 - dmin * summ as f32;
        }
        DType::Q6_K => {
            let d = f16_at(b, 208) * dx;
            let sc = &b[192..208];
            let mut sumi = 0i32;
            let mut q = [0i8; 256];
            for n in 0..2 {
                let (ql, qh) = (&b[64 * n..64 * n + 64], &b[128 + 32 * n..128 + 32 * n + 32]);
                for l in 0..32 {
                    q[128 * n + l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                    q[128 * n + l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                    q[128 * n + l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                    q[128 * n + l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                }
            }
            for j in 0..16 {
                sumi += (sc[j] as i8) as i32 * dot_i8(&q[16 * j..16 * j + 16], &x[16 * j..16 * j + 16]);
            }
            return d * sumi as f32;
        }
        _ => {}
    }
    // Q2_K and Q3_K: dequantize the weights (exact small integers times
    // scales) and dot with the dequantized activations.
    crate::dequantize_block(w, b, &mut vals);
    vals.iter().zip(x).map(|(v, &q)| v * q as f32).sum::<f32>() * dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dequantize, quantize};

    #[test]
    fn integer_dot_matches_float_dot_of_the_quantized_values() {
        let n = 512;
        let w: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.3).collect();
        let x: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 / 89.0 - 0.5) * 4.0).collect();
        for dt in [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K] {
            let mut row = Vec::new();
            quantize(dt, &w, &mut row).unwrap();
            let mut a = ActQ8::default();
            a.quantize(act_kind(dt).unwrap(), &x);
            // The activation values the integer dot sees.
            let xa: Vec<f32> = match a.kind.unwrap() {
                ActKind::Q8K => a.qs.iter().enumerate().map(|(i, &q)| q as f32 * a.d[i / 256]).collect(),
                _ => a.qs.iter().enumerate().map(|(i, &q)| q as f32 * a.d[i / 32]).collect(),
            };
            let mut wd = vec![0f32; n];
            dequantize(dt, &row, &mut wd);
            let want: f32 = wd.iter().zip(&xa).map(|(p, q)| p * q).sum();
            let got = dot_q8_ref(dt, &row, &a);
            // Q4_1/Q5_1 use the f16-rounded block sum, a tiny difference.
            assert!((got - want).abs() < 2e-3 * want.abs().max(1.0), "{dt}: {got} vs {want}");
            // And activation quantization keeps the result close to f32.
            let exact: f32 = wd.iter().zip(&x).map(|(p, q)| p * q).sum();
            assert!((got - exact).abs() < 0.02 * exact.abs().max(1.0), "{dt}: {got} vs exact {exact}");
        }
    }
}
