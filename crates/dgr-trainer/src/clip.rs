//! Gradient clipping by the global L2 norm over all parameters, as PyTorch's
//! `clip_grad_norm_` and fairseq's `--clip-norm`. Burn's optimiser-level clipping works per
//! parameter tensor, which changes the direction of the update; this keeps it.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Scales every gradient in `grads` by `min(1, max_norm / total_norm)` where `total_norm` is
/// the L2 norm of all gradients of `module`'s parameters together. Returns `total_norm`
/// (before clipping). `max_norm <= 0` only measures.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f32) -> f32 {
    let mut squares = SumOfSquares { grads, total: None };
    module.visit(&mut squares);
    let total = squares.total.map_or(0.0, |t| t.into_scalar::<f32>().sqrt());
    if max_norm > 0.0 && total > max_norm {
        let factor = max_norm / (total + 1e-6);
        module.visit(&mut Scale { grads, factor });
    }
    total
}

struct SumOfSquares<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SumOfSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let sum = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + sum,
                None => sum,
            });
        }
    }
}

/// Multiplies every gradient by `factor`.
pub(crate) struct Scale<'a> {
    pub grads: &'a mut GradientsParams,
    pub factor: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad * self.factor);
        }
    }
}
