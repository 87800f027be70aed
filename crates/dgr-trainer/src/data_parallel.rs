//! Gradients summed over data-parallel ranks.
//!
//! Each rank's gradients, in the order the module visits its parameters, go into one flat
//! buffer followed by a presence flag per parameter and the step's scalars (weights, loss,
//! measures, the stop request); one all-reduce sums it all, and the gradients come back as
//! tensors, scaled. A parameter that no rank has a gradient for stays without one, as it would
//! on one rank (AdamW leaves it alone).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use dgr_collective::Collective;

use crate::clip::Scale;
use crate::engine::TrainError;

/// Sums `grads` (which must come from `module`) and `scalars` over every rank of `collective`,
/// then multiplies the gradients by `scale(summed scalars)`. In a world of one, only the scale
/// is applied.
pub fn all_reduce_gradients<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    scalars: &mut [f64],
    collective: &mut dyn Collective,
    scale: impl FnOnce(&[f64]) -> f32,
) -> Result<(), TrainError> {
    if collective.world_size() == 1 {
        let factor = scale(scalars);
        module.visit(&mut Scale { grads, factor });
        return Ok(());
    }
    let mut flat = Flatten { grads, values: Vec::new(), present: Vec::new(), device: None, unreadable: None };
    module.visit(&mut flat);
    let Flatten { mut values, present, device, unreadable, .. } = flat;
    if let Some(reason) = unreadable {
        return Err(TrainError::Input(format!("cannot read a gradient for the all-reduce: {reason}")));
    }
    let gradients = values.len();
    values.extend(present.iter().map(|&p| if p { 1.0 } else { 0.0 }));
    values.extend(scalars.iter().map(|&s| s as f32));
    collective.all_reduce_sum(&mut values)?;

    for (scalar, summed) in scalars.iter_mut().zip(&values[gradients + present.len()..]) {
        *scalar = f64::from(*summed);
    }
    let factor = scale(scalars);
    let device = device.ok_or_else(|| TrainError::Input("this rank's step produced no gradients".into()))?;
    let present: Vec<bool> = values[gradients..gradients + present.len()].iter().map(|&p| p > 0.0).collect();
    let (gradients, _) = values.split_at_mut(gradients);
    gradients.iter_mut().for_each(|g| *g *= factor);
    module.visit(&mut Unflatten { grads, values: gradients, present: &present, next: (0, 0), device });
    Ok(())
}

/// Appends every parameter's gradient (zeros where it has none) to `values`.
struct Flatten<'a> {
    grads: &'a GradientsParams,
    values: Vec<f32>,
    present: Vec<bool>,
    device: Option<Device>,
    /// Why a gradient could not be read as f32 values, if one could not.
    unreadable: Option<String>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match self.grads.get::<D>(param.id) {
            Some(grad) => {
                self.device.get_or_insert_with(|| grad.device());
                let data = grad.into_data().convert::<f32>();
                match data.as_slice::<f32>() {
                    Ok(values) => self.values.extend_from_slice(values),
                    Err(error) => {
                        self.unreadable.get_or_insert(format!("{error:?}"));
                    }
                }
                self.present.push(true);
            }
            None => {
                let count: usize = param.shape().num_elements();
                self.values.resize(self.values.len() + count, 0.0);
                self.present.push(false);
            }
        }
    }
}

/// Puts the summed gradients back, in the order [`Flatten`] took them.
struct Unflatten<'a> {
    grads: &'a mut GradientsParams,
    values: &'a [f32],
    present: &'a [bool],
    /// Parameters and values visited so far.
    next: (usize, usize),
    device: Device,
}

impl ModuleVisitor for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.shape();
        let (index, start) = self.next;
        let end = start + shape.num_elements();
        self.next = (index + 1, end);
        let _ = self.grads.remove::<D>(param.id);
        if let (Some(true), Some(values)) = (self.present.get(index), self.values.get(start..end)) {
            let grad = Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape), &self.device);
            self.grads.register(param.id, grad);
        }
    }
}
