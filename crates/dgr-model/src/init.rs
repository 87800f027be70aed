//! Fresh weights the way HF initialises BERT and BART: linear and embedding weights from a
//! normal distribution with the config's standard deviation, biases at zero (layer norms at
//! one and zero, burn's default).

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

pub(crate) fn linear(input: usize, output: usize, std: f64, device: &Device) -> Linear {
    let mut layer =
        LinearConfig::new(input, output).with_initializer(Initializer::Normal { mean: 0.0, std }).init(device);
    layer.bias = layer.bias.map(|b| Param::from_tensor(Tensor::zeros(b.dims(), device)));
    layer
}

pub(crate) fn embedding(count: usize, dim: usize, std: f64, device: &Device) -> Embedding {
    EmbeddingConfig::new(count, dim).with_initializer(Initializer::Normal { mean: 0.0, std }).init(device)
}
