//! The burn modules behind the gradient-trained algorithms. Linear and logistic regression are
//! networks with no hidden layer; the mlp adds hidden layers; the cnn puts convolutions first.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor, TensorData, activation};
use serde::{Deserialize, Serialize};
use trainyard_core::hyperparameters::Activation;
use trainyard_core::{Algorithm, Hyperparameters};
use trainyard_data::{DatasetInfo, SeededRng};

/// Everything needed to rebuild a network's shape; stored with checkpoints and models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub n_inputs: usize,
    pub n_outputs: usize,
    pub hidden: Vec<usize>,
    pub conv_channels: Vec<usize>,
    pub image_shape: Option<[usize; 3]>,
    pub activation: Activation,
    pub dropout: f64,
}

/// Autodiff keeps intermediates beside each layer's output; training activations are counted
/// this many times.
pub(crate) const AUTODIFF_FACTOR: f64 = 3.0;

impl Architecture {
    pub fn new(algorithm: Algorithm, hp: &Hyperparameters, info: &DatasetInfo) -> Self {
        let deep = matches!(algorithm, Algorithm::Mlp | Algorithm::Cnn);
        Architecture {
            n_inputs: info.n_features,
            n_outputs: info.n_classes().max(1),
            hidden: if deep {
                hp.hidden_layers.iter().map(|h| *h as usize).collect()
            } else {
                vec![]
            },
            conv_channels: if algorithm == Algorithm::Cnn {
                hp.conv_channels.iter().map(|c| *c as usize).collect()
            } else {
                vec![]
            },
            image_shape: info.image_shape,
            activation: hp.activation,
            dropout: if deep { hp.dropout } else { 0.0 },
        }
    }

    /// Estimated training memory in bytes at a batch size: weights, gradients and two optimiser
    /// moments per parameter, plus forward activations kept for the backward pass (with a
    /// factor for autodiff intermediates).
    pub fn estimated_bytes(&self, batch: usize) -> f64 {
        let mut params = 0usize;
        let mut activations = self.n_inputs;
        let mut channels = self.image_shape.map_or(1, |s| s[0]);
        let (mut h, mut w) = self.image_shape.map_or((0, 0), |s| (s[1], s[2]));
        for &out in &self.conv_channels {
            params += channels * out * 9 + out;
            activations += 2 * out * h * w + out * (h / 2) * (w / 2);
            channels = out;
            h /= 2;
            w /= 2;
        }
        let mut width = self.conv_output_width();
        for &next in self.hidden.iter().chain(std::iter::once(&self.n_outputs)) {
            params += width * next + next;
            activations += 2 * next;
            width = next;
        }
        const F32: f64 = 4.0;
        params as f64 * F32 * 4.0 + batch as f64 * activations as f64 * F32 * AUTODIFF_FACTOR
    }

    /// Multiply-adds of one sample's forward pass: the convolutions (3x3, each block's output
    /// at its input's size before pooling) and the dense layers.
    pub fn multiply_adds_per_sample(&self) -> f64 {
        let mut total = 0.0;
        let mut channels = self.image_shape.map_or(1, |s| s[0]);
        let (mut h, mut w) = self.image_shape.map_or((0, 0), |s| (s[1], s[2]));
        for &out in &self.conv_channels {
            total += (channels * out * 9 * h * w) as f64;
            channels = out;
            h /= 2;
            w /= 2;
        }
        let mut width = self.conv_output_width();
        for &next in self.hidden.iter().chain(std::iter::once(&self.n_outputs)) {
            total += (width * next) as f64;
            width = next;
        }
        total
    }

    /// Width of the flattened output of the convolution stack (each block halves the image).
    fn conv_output_width(&self) -> usize {
        match (self.conv_channels.last(), self.image_shape) {
            (Some(channels), Some([_, h, w])) => {
                let blocks = self.conv_channels.len() as u32;
                channels * (h >> blocks) * (w >> blocks)
            }
            _ => self.n_inputs,
        }
    }
}

#[derive(Module, Debug)]
pub struct Network {
    convs: Vec<Conv2d>,
    dense: Vec<Linear>,
}

/// Draws dropout masks from the run's own generator rather than the backend's global one, so
/// masks depend only on the seed and the step: concurrent runs do not disturb each other and a
/// resumed run draws the masks it would have drawn.
pub struct DropoutMasks {
    pub rng: SeededRng,
}

impl Network {
    pub fn new(arch: &Architecture, device: &Device) -> Self {
        let mut convs = Vec::new();
        let mut in_channels = arch.image_shape.map_or(1, |s| s[0]);
        for &out in &arch.conv_channels {
            convs.push(
                Conv2dConfig::new([in_channels, out], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            );
            in_channels = out;
        }
        let mut dense = Vec::new();
        let mut width = arch.conv_output_width();
        for &h in &arch.hidden {
            dense.push(LinearConfig::new(width, h).init(device));
            width = h;
        }
        dense.push(LinearConfig::new(width, arch.n_outputs).init(device));
        Network { convs, dense }
    }

    /// Logits (classification) or the standardised value (regression), shape `[batch, outputs]`.
    pub fn forward(
        &self,
        arch: &Architecture,
        x: Tensor<2>,
        mut dropout: Option<&mut DropoutMasks>,
    ) -> Tensor<2> {
        let [batch, _] = x.dims();
        let mut x = x;
        if let (false, Some([c, h, w])) = (self.convs.is_empty(), arch.image_shape) {
            let mut img: Tensor<4> = x.reshape([batch, c, h, w]);
            for conv in &self.convs {
                img = max_pool2d(
                    activation::relu(conv.forward(img)),
                    MaxPoolOptions::new([2, 2]),
                );
            }
            x = img.flatten(1, 3);
        }
        let last = self.dense.len() - 1;
        for (i, layer) in self.dense.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = activate(arch.activation, x);
                if let Some(masks) = dropout.as_deref_mut().filter(|_| arch.dropout > 0.0) {
                    x = apply_dropout(x, arch.dropout, masks);
                }
            }
        }
        x
    }
}

impl Network {
    /// Every parameter in one vector, in layer order: each convolution's weight (`[c_out,
    /// c_in, 3, 3]`) and bias, then each dense layer's weight (`[d_in, d_out]`) and bias.
    pub(crate) fn flat_values(&self) -> Vec<f32> {
        fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
            let data = t.into_data().convert::<f32>();
            data.try_to_vec::<f32>()
                .expect("float parameters convert to f32")
        }
        let mut out = Vec::new();
        for conv in &self.convs {
            out.extend(values(conv.weight.val()));
            out.extend(
                conv.bias
                    .as_ref()
                    .map_or_else(|| vec![0.0; conv.weight.dims()[0]], |b| values(b.val())),
            );
        }
        for layer in &self.dense {
            out.extend(values(layer.weight.val()));
            out.extend(
                layer
                    .bias
                    .as_ref()
                    .map_or_else(|| vec![0.0; layer.weight.dims()[1]], |b| values(b.val())),
            );
        }
        out
    }

    /// The same network holding `values` (laid out as `flat_values` returns them).
    pub(crate) fn with_flat_values(mut self, values: &[f32], device: &Device) -> Self {
        let mut rest = values;
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head.to_vec()
        };
        for conv in &mut self.convs {
            let shape = conv.weight.dims();
            let weight = take(shape.iter().product());
            conv.weight = Param::from_data(TensorData::new(weight, shape), device);
            let bias = take(shape[0]);
            conv.bias = Some(Param::from_data(TensorData::new(bias, [shape[0]]), device));
        }
        for layer in &mut self.dense {
            let shape = layer.weight.dims();
            let weight = take(shape[0] * shape[1]);
            layer.weight = Param::from_data(TensorData::new(weight, shape), device);
            let bias = take(shape[1]);
            layer.bias = Some(Param::from_data(TensorData::new(bias, [shape[1]]), device));
        }
        assert!(rest.is_empty(), "values for every parameter");
        self
    }
}

fn activate(activation: Activation, x: Tensor<2>) -> Tensor<2> {
    match activation {
        Activation::Relu => activation::relu(x),
        Activation::Tanh => activation::tanh(x),
        Activation::Gelu => activation::gelu(x),
        Activation::Sigmoid => activation::sigmoid(x),
    }
}

fn apply_dropout(x: Tensor<2>, p: f64, masks: &mut DropoutMasks) -> Tensor<2> {
    let [rows, cols] = x.dims();
    let keep = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..rows * cols)
        .map(|_| if masks.rng.next_f64() < p { 0.0 } else { keep })
        .collect();
    let device = x.device();
    x * Tensor::<2>::from_data(TensorData::new(mask, [rows, cols]), &device)
}
