//! Weight rows in "level form", the shape the prefill GEMM multiplies:
//! `w[c] = s[c / 16] · (q[c] − offset) − m[c / 16]` with unsigned 8-bit
//! levels `q`, one f32 scale and one f32 min per 16 columns, and an integer
//! offset fixed per weight type. Every type whose blocks split into groups of
//! 16 with one scale (and min) has this form; unsigned levels suit the
//! u8 × i8 integer instructions (VNNI `dpbusd`, AVX2 `maddubs`).

use crate::act::scale_min_k4;
use crate::f16_at;
use gemma_core::DType;

/// How a weight type maps onto level form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelForm {
    /// Subtracted from every level (e.g. 16 for Q5_0's 0..=31 levels).
    pub offset: u8,
    /// Largest level the type stores (bounds the integer products).
    pub max_level: u8,
    /// Whether the type has per-group mins (`m` is all zero otherwise).
    pub has_min: bool,
}

/// The level form of `dtype`, or None for types without one (floats, Q2_K/Q3_K).
pub fn level_form(dtype: DType) -> Option<LevelForm> {
    let f = |offset, max_level, has_min| Some(LevelForm { offset, max_level, has_min });
    match dtype {
        DType::Q8_0 => f(128, 255, false),
        DType::Q4_0 => f(8, 15, false),
        DType::Q5_0 => f(16, 31, false),
        DType::Q4_1 | DType::Q4_K => f(0, 15, true),
        DType::Q5_1 | DType::Q5_K => f(0, 31, true),
        DType::Q6_K => f(32, 63, false),
        _ => None,
    }
}

/// Unpack one row of `dtype` blocks (`q.len()` columns, a multiple of the
/// block size) into levels `q: [cols]`, scales `s: [cols/16]` and mins
/// `m: [cols/16]` (zeros for types without mins).
/// Panics if `dtype` has no level form.
pub fn unpack_levels(dtype: DType, row: &[u8], q: &mut [u8], s: &mut [f32], m: &mut [f32]) {
    let cols = q.len();
    let (bs, bb) = (dtype.block_size(), dtype.block_bytes());
    assert!(cols.is_multiple_of(bs) && row.len() >= cols / bs * bb, "row does not hold {cols} columns of {dtype}");
    assert!(s.len() == cols / 16 && m.len() == cols / 16, "scale buffers must hold cols/16 values");
    for (i, blk) in row.chunks_exact(bb).take(cols / bs).enumerate() {
        let (q, s, m) = (&mut q[i * bs..(i + 1) * bs], &mut s[i * bs / 16..(i + 1) * bs / 16], &mut m[i * bs / 16..(i + 1) * bs / 16]);
        match dtype {
            DType::Q8_0 => {
                for (l, &b) in q.iter_mut().zip(&blk[2..34]) {
                    *l = b ^ 0x80; // i8 + 128
                }
                s.fill(f16_at(blk, 0));
                m.fill(0.0);
            }
            DType::Q4_0 | DType::Q4_1 => {
                let (qs, mn) = if dtype == DType::Q4_0 { (&blk[2..18], 0.0) } else { (&blk[4..20], -f16_at(blk, 2)) };
                for j in 0..16 {
                    q[j] = qs[j] & 0xF;
                    q[j + 16] = qs[j] >> 4;
                }
                s.fill(f16_at(blk, 0));
                m.fill(mn);
            }
            DType::Q5_0 | DType::Q5_1 => {
                let (h, mn) = if dtype == DType::Q5_0 { (2, 0.0) } else { (4, -f16_at(blk, 2)) };
                let qh = u32::from_le_bytes([blk[h], blk[h + 1], blk[h + 2], blk[h + 3]]);
                let qs = &blk[h + 4..h + 20];
                for j in 0..16 {
                    q[j] = (qs[j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
                    q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                }
                s.fill(f16_at(blk, 0));
                m.fill(mn);
            }
            DType::Q4_K | DType::Q5_K => {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let sc = &blk[4..16];
                let (qh, qs) = if dtype == DType::Q5_K { (Some(&blk[16..48]), &blk[48..176]) } else { (None, &blk[16..144]) };
                for c in 0..4 {
                    for half in 0..2 {
                        let j = 2 * c + half;
                        let (sj, mj) = scale_min_k4(j, sc);
                        s[2 * j..2 * j + 2].fill(d * sj as f32);
                        m[2 * j..2 * j + 2].fill(dmin * mj as f32);
                        for l in 0..32 {
                            let nib = (qs[32 * c + l] >> (4 * half)) & 0xF;
                            let hi = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
                            q[32 * j + l] = nib | hi;
                        }
                    }
                }
            }
            DType::Q6_K => {
                let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
                let d = f16_at(blk, 208);
                for n in 0..2 {
                    for l in 0..32 {
                        let (a, b, h) = (ql[64 * n + l], ql[64 * n + l + 32], qh[32 * n + l]);
                        let o = 128 * n + l;
                        q[o] = (a & 0xF) | ((h & 3) << 4);
                        q[o + 32] = (b & 0xF) | (((h >> 2) & 3) << 4);
                        q[o + 64] = (a >> 4) | (((h >> 4) & 3) << 4);
                        q[o + 96] = (b >> 4) | (((h >> 6) & 3) << 4);
                    }
                }
                for (g, sv) in s.iter_mut().enumerate() {
                    *sv = d * (sc[g] as i8) as f32;
                }
                m.fill(0.0);
            }
            other => panic!("{other} has no level form"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_core::tensor::ALL_DTYPES;

    /// `s·(q − offset) − m` reproduces the reference dequantization of every
    /// type with a level form, and levels stay within `max_level`.
    #[test]
    fn level_form_equals_dequantize() {
        let cols = 512;
        let x: Vec<f32> = (0..cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.4) * 0.3).collect();
        let mut seen = 0;
        for dt in ALL_DTYPES {
            let Some(form) = level_form(dt) else { continue };
            seen += 1;
            let mut raw = Vec::new();
            crate::quantize(dt, &x, &mut raw).unwrap();
            let mut want = vec![0f32; cols];
            crate::dequantize(dt, &raw, &mut want);
            let (mut q, mut s, mut m) = (vec![0u8; cols], vec![0f32; cols / 16], vec![0f32; cols / 16]);
            unpack_levels(dt, &raw, &mut q, &mut s, &mut m);
            for c in 0..cols {
                assert!(q[c] <= form.max_level, "{dt}: level {} > {}", q[c], form.max_level);
                let got = s[c / 16] * (q[c] as f32 - form.offset as f32) - m[c / 16];
                assert!((got - want[c]).abs() <= 1e-6 * want[c].abs().max(1e-3), "{dt} col {c}: {got} vs {}", want[c]);
            }
            if !form.has_min {
                assert!(m.iter().all(|&v| v == 0.0), "{dt}: mins must be zero");
            }
        }
        assert_eq!(seen, 8);
    }
}
