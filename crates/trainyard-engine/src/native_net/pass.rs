//! Forward and backward passes of a network on one flat parameter vector: the convolution
//! blocks (`conv`), if any, then per dense layer `z = h @ W + b` (`W` is `[d_in, d_out]`
//! row-major, as burn's `Linear` stores it), the activation and dropout on every layer but
//! the last. The products go through gemm (or `bf16` in a bf16 run); the rest is one pass per
//! layer over the batch.

use trainyard_core::Task;
use trainyard_core::hyperparameters::{Activation, Precision};
use trainyard_data::SeededRng;

use super::conv::{self, ConvSpan, ConvTape};
use crate::bf16::matmul_in;
use crate::buffers::Buffers;
use crate::sae::linalg::View;

/// Where one layer's weight and bias sit in the parameter vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub d_in: usize,
    pub d_out: usize,
    pub weight: usize,
    pub bias: usize,
}

/// The dense layers with widths `sizes` (inputs, hidden..., outputs), in order, laid out
/// from parameter offset `start`.
pub fn spans(sizes: &[usize], start: usize) -> Vec<Span> {
    let mut at = start;
    sizes
        .windows(2)
        .map(|w| {
            let span = Span {
                d_in: w[0],
                d_out: w[1],
                weight: at,
                bias: at + w[0] * w[1],
            };
            at = span.bias + w[1];
            span
        })
        .collect()
}

/// What a training pass keeps for the backward: each layer's input, and for hidden layers
/// their pre-activations and dropout masks (scaled by the keep factor).
pub struct Tape {
    convs: Vec<ConvTape>,
    inputs: Vec<Vec<f32>>,
    pre: Vec<Vec<f32>>,
    masks: Vec<Option<Vec<f32>>>,
    pub logits: Vec<f32>,
    rows: usize,
}

/// A network's layers over its parameters, with the buffers its passes reuse.
pub struct Stack<'a> {
    /// The convolution blocks and the image they read (none for a perceptron).
    pub convs: &'a [ConvSpan],
    pub image: Option<[usize; 3]>,
    pub spans: &'a [Span],
    pub params: &'a [f32],
    pub activation: Activation,
    pub precision: Precision,
    pub buffers: &'a mut Buffers,
}

impl Stack<'_> {
    /// `z = h @ W + b` for one layer.
    fn affine(&mut self, s: &Span, h: &[f32], rows: usize) -> Vec<f32> {
        let mut z = self.buffers.stale(rows * s.d_out);
        let weight = &self.params[s.weight..s.bias];
        matmul_in(
            self.precision,
            &mut z,
            View::new(h, rows, s.d_in),
            View::new(weight, s.d_in, s.d_out),
            false,
        );
        let bias = &self.params[s.bias..s.bias + s.d_out];
        for row in z.chunks_mut(s.d_out) {
            row.iter_mut().zip(bias).for_each(|(z, b)| *z += b);
        }
        z
    }

    /// The dense stack's input: the convolution blocks' pooled output, flattened as burn
    /// flattens it (channels first), or `x` itself without convolutions.
    fn features(
        &mut self,
        x: Vec<f32>,
        rows: usize,
        mut tapes: Option<&mut Vec<ConvTape>>,
    ) -> Vec<f32> {
        let (Some(image), Some(last)) = (self.image, self.convs.last()) else {
            return x;
        };
        let mut h = conv::to_channels_last(&x, image, self.buffers);
        self.buffers.give(x);
        for span in self.convs {
            let keep = tapes.is_some();
            let (pooled, tape) = conv::forward(span, self.params, &h, rows, keep, self.buffers);
            if let (Some(tapes), Some(tape)) = (tapes.as_deref_mut(), tape) {
                tapes.push(tape);
            }
            self.buffers.give(std::mem::replace(&mut h, pooled));
        }
        let (height, width) = last.pooled();
        let flat = conv::to_channels_first(&h, [last.c_out, height, width], self.buffers);
        self.buffers.give(h);
        flat
    }

    /// Outputs without gradients or dropout (evaluation, prediction).
    pub fn outputs(&mut self, x: &[f32], rows: usize) -> Vec<f32> {
        let last = self.spans.len() - 1;
        let mut h = self.features(x.to_vec(), rows, None);
        for (l, s) in self.spans.iter().enumerate() {
            let mut z = self.affine(s, &h, rows);
            if l < last {
                z.iter_mut()
                    .for_each(|v| *v = activate(self.activation, *v));
            }
            self.buffers.give(std::mem::replace(&mut h, z));
        }
        h
    }

    /// A training forward pass; dropout masks, when `dropout` is set, are drawn from `rng`
    /// layer by layer in row-major order (the order the burn path draws them in).
    pub fn forward(
        &mut self,
        x: Vec<f32>,
        rows: usize,
        dropout: Option<(f64, &mut SeededRng)>,
    ) -> Tape {
        let last = self.spans.len() - 1;
        let mut tape = Tape {
            convs: Vec::with_capacity(self.convs.len()),
            inputs: Vec::with_capacity(self.spans.len()),
            pre: Vec::with_capacity(last),
            masks: Vec::with_capacity(last),
            logits: vec![],
            rows,
        };
        let mut dropout = dropout.filter(|(p, _)| *p > 0.0);
        let mut h = self.features(x, rows, Some(&mut tape.convs));
        for (l, s) in self.spans.iter().enumerate() {
            let z = self.affine(s, &h, rows);
            tape.inputs.push(h);
            if l == last {
                tape.logits = z;
                break;
            }
            let mut a = self.buffers.stale(z.len());
            a.iter_mut()
                .zip(&z)
                .for_each(|(a, &z)| *a = activate(self.activation, z));
            let mask = dropout.as_mut().map(|(p, rng)| {
                let keep = (1.0 / (1.0 - *p)) as f32;
                let mut mask = self.buffers.stale(a.len());
                for (m, a) in mask.iter_mut().zip(a.iter_mut()) {
                    *m = if rng.next_f64() < *p { 0.0 } else { keep };
                    *a *= *m;
                }
                mask
            });
            tape.pre.push(z);
            tape.masks.push(mask);
            h = a;
        }
        tape
    }

    /// Gradients of the loss (whose gradient with respect to the logits is `g`) in the
    /// parameter vector's layout; the tape's buffers go back for the next step.
    pub fn backward(&mut self, mut tape: Tape, mut g: Vec<f32>) -> Vec<f32> {
        let rows = tape.rows;
        // The products overwrite the dense weights' gradients; what is added into (biases,
        // the convolutions) starts at zero.
        let mut grads = self.buffers.stale(self.params.len());
        grads[..self.spans[0].weight].fill(0.0);
        for s in self.spans {
            grads[s.bias..s.bias + s.d_out].fill(0.0);
        }
        for (l, s) in self.spans.iter().enumerate().rev() {
            let (weight_grad, rest) = grads[s.weight..].split_at_mut(s.d_in * s.d_out);
            let input = tape.inputs.pop().expect("one input per layer");
            matmul_in(
                self.precision,
                weight_grad,
                View::new(&input, rows, s.d_in).t(),
                View::new(&g, rows, s.d_out),
                false,
            );
            self.buffers.give(input);
            let bias_grad = &mut rest[..s.d_out];
            for row in g.chunks(s.d_out) {
                bias_grad.iter_mut().zip(row).for_each(|(b, v)| *b += v);
            }
            if l == 0 && self.convs.is_empty() {
                break;
            }
            let mut gh = self.buffers.stale(rows * s.d_in);
            matmul_in(
                self.precision,
                &mut gh,
                View::new(&g, rows, s.d_out),
                View::new(&self.params[s.weight..s.bias], s.d_in, s.d_out).t(),
                false,
            );
            self.buffers.give(std::mem::take(&mut g));
            if l == 0 {
                self.conv_backward(std::mem::take(&mut tape.convs), gh, rows, &mut grads);
                break;
            }
            let pre = tape.pre.pop().expect("one pre-activation per hidden layer");
            match tape.masks.pop().expect("one mask slot per hidden layer") {
                Some(mask) => {
                    gh.iter_mut().zip(&pre).zip(&mask).for_each(|((g, &z), m)| {
                        *g *= m * derivative(self.activation, z);
                    });
                    self.buffers.give(mask);
                }
                None => gh
                    .iter_mut()
                    .zip(&pre)
                    .for_each(|(g, &z)| *g *= derivative(self.activation, z)),
            }
            self.buffers.give(pre);
            g = gh;
        }
        self.buffers.give(g);
        self.buffers.give(tape.logits);
        grads
    }

    /// The convolution blocks' backward from the gradient of their flattened output.
    fn conv_backward(
        &mut self,
        mut tapes: Vec<ConvTape>,
        g_features: Vec<f32>,
        rows: usize,
        grads: &mut [f32],
    ) {
        let last = self.convs.last().expect("convolutions");
        let (height, width) = last.pooled();
        let shape = [last.c_out, height, width];
        let mut g = conv::to_channels_last(&g_features, shape, self.buffers);
        self.buffers.give(g_features);
        for (i, span) in self.convs.iter().enumerate().rev() {
            let tape = tapes.pop().expect("one tape per block");
            let next = conv::backward(
                span,
                self.params,
                tape,
                &g,
                rows,
                grads,
                i > 0,
                self.buffers,
            );
            self.buffers.give(std::mem::take(&mut g));
            match next {
                Some(next) => g = next,
                None => break,
            }
        }
    }
}

#[inline]
fn activate(activation: Activation, z: f32) -> f32 {
    match activation {
        Activation::Relu => z.max(0.0),
        Activation::Tanh => z.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
        Activation::Gelu => 0.5 * z * (1.0 + libm::erff(z * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

#[inline]
fn derivative(activation: Activation, z: f32) -> f32 {
    match activation {
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Tanh => 1.0 - z.tanh().powi(2),
        Activation::Sigmoid => {
            let s = 1.0 / (1.0 + (-z).exp());
            s * (1.0 - s)
        }
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + libm::erff(z * std::f32::consts::FRAC_1_SQRT_2));
            let density = (-0.5 * z * z).exp() * 0.398_942_3;
            cdf + z * density
        }
    }
}

/// The batch's mean loss (cross-entropy on logits for classification, squared error for
/// regression) and, when `with_gradient`, its gradient with respect to the outputs.
pub fn loss(task: Task, outputs: &[f32], y: &[f32], with_gradient: bool) -> (f64, Vec<f32>) {
    let rows = y.len();
    let width = outputs.len() / rows.max(1);
    let mut grad = if with_gradient {
        vec![0.0; outputs.len()]
    } else {
        vec![]
    };
    let scale = 1.0 / rows.max(1) as f32;
    let mut total = 0.0f64;
    match task {
        Task::Classification => {
            for (i, row) in outputs.chunks(width).enumerate() {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                let log_sum = max + sum.ln();
                let target = y[i] as usize;
                total += f64::from(log_sum - row[target]);
                if with_gradient {
                    let g = &mut grad[i * width..][..width];
                    for (g, v) in g.iter_mut().zip(row) {
                        *g = (v - log_sum).exp() * scale;
                    }
                    g[target] -= scale;
                }
            }
        }
        Task::Regression | Task::Unlabeled | Task::Text => {
            for (i, (&out, &target)) in outputs.iter().zip(y).enumerate() {
                let diff = out - target;
                total += f64::from(diff * diff);
                if with_gradient {
                    grad[i] = 2.0 * diff * scale;
                }
            }
        }
    }
    (total / rows.max(1) as f64, grad)
}
