//! Backward ops, one per forward step of the block, each generic over
//! [`crate::real::Real`]: the f64 instantiation is the reference that a
//! finite-difference test checks, the f32 one is what training runs.

pub mod altup;
pub mod attention;
pub mod cross_entropy;
pub mod geglu;
pub mod linear;
pub mod moe;
pub mod norm;
pub mod ple;
pub mod rope;
