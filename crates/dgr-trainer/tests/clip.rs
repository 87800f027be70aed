//! Global-norm clipping against a direct computation of PyTorch's `clip_grad_norm_`.

use burn::nn::LinearConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use dgr_trainer::clip::clip_global_norm;

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn norm(values: &[Vec<f32>]) -> f32 {
    values.iter().flatten().map(|v| v * v).sum::<f32>().sqrt()
}

#[test]
fn clipping_scales_all_gradients_by_one_factor() {
    let device = Device::flex().autodiff();
    device.seed(7);
    let layer = LinearConfig::new(4, 3).init(&device);
    let x =
        Tensor::<2>::from_data(TensorData::new((0..8).map(|v| v as f32 - 3.0).collect::<Vec<_>>(), [2, 4]), &device);
    let loss = layer.forward(x).square().sum();
    let grads = GradientsParams::from_grads(loss.backward(), &layer);
    let bias_id = layer.bias.as_ref().unwrap().id;
    let before = vec![flat(grads.get::<2>(layer.weight.id).unwrap()), flat(grads.get::<1>(bias_id).unwrap())];
    let expected_norm = norm(&before);
    assert!(expected_norm > 1.0, "the case must need clipping: {expected_norm}");

    // Only measuring leaves the gradients as they are.
    let mut clipped = grads;
    assert!((clip_global_norm(&layer, &mut clipped, 0.0) - expected_norm).abs() <= 1e-4 * expected_norm);
    assert_eq!(flat(clipped.get::<2>(layer.weight.id).unwrap()), before[0]);

    let total = clip_global_norm(&layer, &mut clipped, 1.0);
    assert!((total - expected_norm).abs() <= 1e-4 * expected_norm);
    let after = vec![flat(clipped.get::<2>(layer.weight.id).unwrap()), flat(clipped.get::<1>(bias_id).unwrap())];
    let factor = 1.0 / (expected_norm + 1e-6);
    for (a, b) in after.iter().flatten().zip(before.iter().flatten()) {
        assert!((a - b * factor).abs() <= 1e-5, "{a} vs {}", b * factor);
    }
    assert!((norm(&after) - 1.0).abs() <= 1e-4, "clipped norm {}", norm(&after));
}
