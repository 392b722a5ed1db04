//! `trainyard bench --workload bf16_products`: the networks' matrix products timed in f32 and
//! in bf16 on this CPU's kernel, side by side: the figures behind `bf16::rounds` (which
//! products a `precision: "bf16"` run rounds).

use std::time::Instant;

use serde_json::{Value, json};
use trainyard_engine::bf16::{self, Kernel};
use trainyard_engine::sae::linalg::{self, View};

use crate::bench_sae::fill;

/// Timed calls of each product on each side, alternating.
const ROUNDS: usize = 31;
/// Untimed calls before each product's timed ones.
const WARM_UP: std::time::Duration = std::time::Duration::from_millis(300);

/// Which factor of a product is a transposed view, as in the backward passes.
#[derive(Clone, Copy)]
enum Transposed {
    Neither,
    /// A weight gradient: `x^T @ d`.
    Left,
    /// An input gradient: `d @ w^T`.
    Right,
}

use Transposed::{Left, Neither, Right};

/// `(m, k, n, which factor is a transposed view, which product it is)`.
const SHAPES: [(usize, usize, usize, Transposed, &str); 11] = [
    (512, 784, 256, Neither, "mlp_b512: first layer"),
    (
        784,
        512,
        256,
        Left,
        "mlp_b512: first layer's weight gradient",
    ),
    (512, 256, 10, Neither, "mlp_b512: output layer"),
    (128, 784, 256, Neither, "mlp_b128: first layer"),
    (
        784,
        128,
        256,
        Left,
        "mlp_b128: first layer's weight gradient",
    ),
    (25088, 144, 32, Right, "cnn: second convolution"),
    (
        144,
        25088,
        32,
        Left,
        "cnn: second convolution's weight gradient",
    ),
    (
        25088,
        32,
        144,
        Neither,
        "cnn: second convolution's patch gradient",
    ),
    (128, 1568, 128, Neither, "cnn: dense layer"),
    (1568, 128, 128, Left, "cnn: dense layer's weight gradient"),
    (128, 128, 1568, Right, "cnn: dense layer's input gradient"),
];

pub fn products() -> Value {
    let products: Vec<Value> = SHAPES
        .iter()
        .map(|&(m, k, n, transposed, product)| {
            let (a, b) = (fill(m * k, 0.1), fill(k * n, 0.2));
            let left = match transposed {
                Left => View::new(&a, k, m).t(),
                _ => View::new(&a, m, k),
            };
            let right = match transposed {
                Right => View::new(&b, n, k).t(),
                _ => View::new(&b, k, n),
            };
            let (mut out_f32, mut out_bf16) = (vec![0.0; m * n], vec![0.0; m * n]);
            let (f32_us, bf16_us) = alternately(
                || linalg::matmul(&mut out_f32, left, right, false),
                || bf16::matmul(&mut out_bf16, left, right, false),
            );
            json!({
                "product": product,
                "shape": [m, k, n],
                "f32_us": f32_us,
                "bf16_us": bf16_us,
                "bf16_speedup": f32_us / bf16_us,
                "rounded_in_bf16_runs": bf16::rounds(m, k, n),
            })
        })
        .collect();
    json!({
        "workload": "bf16_products",
        "kernel": format!("{:?}", Kernel::detect()),
        "products": products,
        "threads": crate::bench::rayon_threads(),
    })
}

/// Median microseconds per call of `a` and of `b`, timed one call each in turn so that a
/// machine's drift falls on both alike, after `WARM_UP` of untimed calls: without it the
/// first product listed measured twice as slow as the same product further down (the
/// cores had not yet reached their working clock).
fn alternately(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let started = Instant::now();
    while started.elapsed() < WARM_UP {
        a();
        b();
    }
    let (mut a_us, mut b_us) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        a_us.push(microseconds(&mut a));
        b_us.push(microseconds(&mut b));
    }
    (median(a_us), median(b_us))
}

fn microseconds(f: &mut impl FnMut()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
