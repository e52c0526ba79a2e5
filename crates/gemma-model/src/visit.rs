//! The loaded weights seen through the tensor table: [`Weights::get`] (the
//! one map from the table's parts to the fields of `Weights`) and
//! [`Weights::visit`] (every loaded tensor once, in the table's order).

use crate::tensors::{spec, Part, Scope, Tensor, TensorSpec, TENSORS};
use crate::weights::Weights;
use gemma_core::Matrix;

impl Weights {
    /// The loaded tensor `part` of layer `l` (`l` is 0 for model-wide
    /// parts), or None where this model has none. The one place that maps
    /// the table's parts to the fields of [`Weights`].
    pub fn get(&self, part: Part, l: usize) -> Option<Tensor<'_>> {
        use Tensor::{Matrix as M, Stack as S, Vector as V};
        fn mat(m: &Matrix) -> Option<Tensor<'_>> {
            (m.rows > 0).then_some(Tensor::Matrix(m))
        }
        fn vec(v: &Option<Vec<f32>>) -> Option<Tensor<'_>> {
            v.as_deref().map(Tensor::Vector)
        }
        if self.layer_part(part) {
            let w = self.layers.get(l)?;
            return match part {
                Part::AttnNorm => Some(V(&w.attn_norm)),
                Part::Q => mat(&w.q),
                Part::K => mat(&w.k),
                Part::V => mat(&w.v),
                Part::O => mat(&w.o),
                Part::QNorm => vec(&w.q_norm),
                Part::KNorm => vec(&w.k_norm),
                Part::PostAttnNorm => vec(&w.post_attn_norm),
                Part::FfnNorm => Some(V(&w.ffn_norm)),
                Part::Gate => mat(&w.gate),
                Part::Up => mat(&w.up),
                Part::Down => mat(&w.down),
                Part::PostFfnNorm => vec(&w.post_ffn_norm),
                Part::LayerScalar => w.layer_scalar.as_ref().map(|s| V(std::slice::from_ref(s))),
                Part::PleGate => w.ple.as_ref().map(|p| M(&p.gate)),
                Part::PleProj => w.ple.as_ref().map(|p| M(&p.proj)),
                Part::PleNorm => w.ple.as_ref().map(|p| V(&p.norm)),
                Part::RouterProj => w.moe.as_ref().map(|e| M(&e.router)),
                Part::RouterScale => w.moe.as_ref().map(|e| V(&e.router_scale)),
                Part::ExpertScale => w.moe.as_ref().map(|e| V(&e.expert_scale)),
                Part::ExpertsGateUp => w.moe.as_ref().map(|e| S(&e.gate_up)),
                Part::ExpertsDown => w.moe.as_ref().map(|e| S(&e.down)),
                Part::MoePreNorm => w.moe.as_ref().map(|e| V(&e.pre_norm)),
                Part::MoePostNormDense => w.moe.as_ref().map(|e| V(&e.post_norm_dense)),
                Part::MoePostNormExperts => w.moe.as_ref().map(|e| V(&e.post_norm_experts)),
                Part::AltUpCorrectScale => w.altup.as_ref().map(|a| V(&a.correct_output_scale)),
                Part::AltUpCorrectionCoefs => w.altup.as_ref().map(|a| V(&a.correction_coefs)),
                Part::AltUpPredictionCoefs => w.altup.as_ref().map(|a| V(&a.prediction_coefs)),
                Part::AltUpRouter => w.altup.as_ref().map(|a| M(&a.router)),
                Part::AltUpRouterNorm => w.altup.as_ref().map(|a| V(&a.router_norm)),
                Part::LaurelLeft => w.laurel.as_ref().map(|r| M(&r.left)),
                Part::LaurelRight => w.laurel.as_ref().map(|r| M(&r.right)),
                Part::LaurelNorm => w.laurel.as_ref().map(|r| V(&r.norm)),
                _ => None,
            };
        }
        match part {
            Part::Embed => Some(M(&self.embed)),
            Part::FinalNorm => Some(V(&self.final_norm)),
            Part::LmHead => self.lm_head.as_ref().map(M),
            Part::PleEmbed => self.ple.as_ref().map(|p| M(&p.embed)),
            Part::PleModelProj => self.ple.as_ref().map(|p| M(&p.proj)),
            Part::PleModelNorm => self.ple.as_ref().map(|p| V(&p.norm)),
            Part::AltUpProj => self.altup.as_ref().filter(|a| !a.proj.is_empty()).map(|a| S(&a.proj)),
            Part::AltUpUnembed => self.altup.as_ref().filter(|a| !a.unembed.is_empty()).map(|a| S(&a.unembed)),
            _ => None,
        }
    }

    fn layer_part(&self, part: Part) -> bool {
        spec(part).scope == Scope::Layer
    }

    /// Every loaded tensor once, in the table's order (see [`walk`]), with
    /// its row and layer index.
    pub fn visit<'w>(&'w self, f: &mut dyn FnMut(&'static TensorSpec, usize, Tensor<'w>)) {
        let first_layer = TENSORS.iter().position(|s| s.scope == Scope::Layer).unwrap_or(TENSORS.len());
        let model = |rows: &'static [TensorSpec], f: &mut dyn FnMut(&'static TensorSpec, usize, Tensor<'w>)| {
            for s in rows.iter().filter(|s| s.scope == Scope::Model) {
                if let Some(t) = self.get(s.part, 0) {
                    f(s, 0, t);
                }
            }
        };
        model(&TENSORS[..first_layer], f);
        for l in 0..self.layers.len() {
            for s in TENSORS.iter().filter(|s| s.scope == Scope::Layer) {
                if let Some(t) = self.get(s.part, l) {
                    f(s, l, t);
                }
            }
        }
        model(&TENSORS[first_layer..], f);
    }

    /// [`Weights::visit`] as a list.
    pub fn tensors(&self) -> Vec<(&'static TensorSpec, usize, Tensor<'_>)> {
        let mut out = Vec::new();
        self.visit(&mut |s, l, t| out.push((s, l, t)));
        out
    }
}

