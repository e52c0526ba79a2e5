//! CPU kernels. Every op has a scalar reference; SIMD paths are chosen at run
//! time by CPU feature detection and tested against the reference.

pub mod attn_gemm;
pub mod dot;
pub mod geglu;
pub mod gemm;
pub mod gemm_nn;
mod gemm_amx;
mod gemm_amx_bf16;
mod gemm_avx2;
mod gemm_bf16_dp;
mod gemm_packed;
pub mod gemv_packed;
pub mod matmul;
pub mod matmul_t;
mod matmul_t_amx;
pub mod ops;
pub mod pool;
mod prefetch;
pub mod qdot;
pub mod vnni;

pub use matmul::{matmul, matmul_decode, matmul_f32_acts, matmul_train, quantized_training_bf16, set_quantized_training_bf16};
pub use matmul_t::matmul_t;
pub use ops::{add_in_place, gelu_tanh, rms_norm, rms_norm_in_place, rope, rope_inv_freq, softcap, softmax};

/// Where this CPU multiplies bf16 by bf16: `Some("AMX-BF16")` (forward and
/// input gradient), `Some("AVX512-BF16")` (forward), or None (f32 products).
pub fn bf16_products() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if gemm_amx::has_amx_bf16() {
            return Some("AMX-BF16");
        }
        if gemm_bf16_dp::has_avx512_bf16() {
            return Some("AVX512-BF16");
        }
    }
    None
}

/// The kernel paths this CPU runs, as `gemma --version` reports them:
/// `amx-int8` (prefill, and `amx-bf16` for bf16 weights) with `avx512-vnni`, `avx512-vnni`, `avx2+fma+f16c` or
/// `scalar` (after `GEMMA_NO_AMX`, `GEMMA_FORCE_SCALAR` / `GEMMA_NO_AVX512`).
pub fn kernel_paths() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if gemm_amx::has_amx_bf16() {
        return "amx-int8 + amx-bf16 (prefill) + avx512-vnni (avx512f, avx512bw, avx512dq, avx512vnni) + avx2 fma f16c";
    }
    #[cfg(target_arch = "x86_64")]
    if gemm_amx::has_amx() {
        return "amx-int8 (prefill) + avx512-vnni (avx512f, avx512bw, avx512dq, avx512vnni) + avx2 fma f16c";
    }
    #[cfg(target_arch = "x86_64")]
    if gemm_bf16_dp::has_avx512_bf16() {
        return "avx512-vnni + avx512-bf16 (avx512f, avx512bw, avx512dq, avx512vnni, avx512bf16) + avx2 fma f16c";
    }
    if gemm::has_avx512_vnni() {
        "avx512-vnni (avx512f, avx512bw, avx512dq, avx512vnni) + avx2 fma f16c"
    } else if dot::simd_level() == dot::SimdLevel::Avx2 {
        "avx2 fma f16c"
    } else {
        "scalar"
    }
}
