//! The hand-written stack trains as burn does: from the same initial weights and masks, a few
//! steps of every optimiser, activation and loss land on the same weights (to float rounding),
//! and the state written to a checkpoint resumes the run exactly.

use trainyard_core::hyperparameters::{Activation, OptimizerKind};
use trainyard_core::{Algorithm, DatasetShape, Hyperparameters, Task};
use trainyard_data::SeededRng;

use super::*;
use crate::learner::BurnLearner;
use crate::neural::init_network;

const ROWS: usize = 24;
const INPUTS: usize = 6;

fn setup(
    task: Task,
    optimizer: OptimizerKind,
    activation: Activation,
    dropout: f64,
) -> (Hyperparameters, Architecture) {
    let classes = (task == Task::Classification).then_some(3);
    let shape = DatasetShape {
        task,
        n_features: INPUTS,
        n_classes: classes,
        image_shape: None,
        n_rows: ROWS,
    };
    let mut hp = Hyperparameters::defaults(Algorithm::Mlp, &shape);
    hp.hidden_layers = vec![8, 5];
    hp.optimizer = optimizer;
    hp.activation = activation;
    hp.dropout = dropout;
    hp.weight_decay = 0.01;
    let arch = Architecture {
        n_inputs: INPUTS,
        n_outputs: classes.unwrap_or(1),
        hidden: vec![8, 5],
        conv_channels: vec![],
        image_shape: None,
        activation,
        dropout,
    };
    (hp, arch)
}

fn batch(task: Task) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SeededRng::new(11);
    let x: Vec<f32> = (0..ROWS * INPUTS).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = (0..ROWS)
        .map(|i| match task {
            Task::Classification => (i % 3) as f32,
            _ => x[i * INPUTS] - 0.5 * x[i * INPUTS + 1],
        })
        .collect();
    (x, y)
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn flat(learner: &dyn Learner, template: &Network) -> Vec<f32> {
    let record = learner.weights().unwrap();
    load_record(template.clone(), &record)
        .unwrap()
        .flat_values()
}

fn train(learner: &mut dyn Learner, task: Task, steps: u64) -> Vec<f64> {
    let (x, y) = batch(task);
    (0..steps)
        .map(|step| {
            let mut masks = DropoutMasks {
                rng: SeededRng::derive(5, step),
            };
            learner.step(x.clone(), &y, 0.01, &mut masks)
        })
        .collect()
}

fn learners(
    task: Task,
    optimizer: OptimizerKind,
    activation: Activation,
    dropout: f64,
) -> (BurnLearner, DenseLearner, Network) {
    let (hp, arch) = setup(task, optimizer, activation, dropout);
    let device = Device::flex().autodiff();
    let network = init_network(&arch, &device, 3);
    let burn = BurnLearner::new(network.clone(), &hp, &arch, task);
    let dense = DenseLearner::new(network.clone(), &device, &hp, &arch, task);
    (burn, dense, network)
}

#[test]
fn every_optimiser_activation_and_loss_trains_as_burn_does() {
    let cases = [
        (
            Task::Classification,
            OptimizerKind::Adam,
            Activation::Relu,
            0.0,
        ),
        (
            Task::Classification,
            OptimizerKind::Adamw,
            Activation::Gelu,
            0.3,
        ),
        (
            Task::Classification,
            OptimizerKind::Sgd,
            Activation::Tanh,
            0.0,
        ),
        (
            Task::Regression,
            OptimizerKind::Adam,
            Activation::Sigmoid,
            0.2,
        ),
        (Task::Regression, OptimizerKind::Sgd, Activation::Relu, 0.0),
    ];
    for (task, optimizer, activation, dropout) in cases {
        let (mut burn, mut dense, template) = learners(task, optimizer, activation, dropout);
        assert_eq!(
            flat(&burn, &template),
            flat(&dense, &template),
            "same start"
        );
        let burn_losses = train(&mut burn, task, 4);
        let dense_losses = train(&mut dense, task, 4);
        let case = format!("{task:?} {optimizer:?} {activation:?} dropout {dropout}");
        for (a, b) in burn_losses.iter().zip(&dense_losses) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{case}: losses {burn_losses:?} vs {dense_losses:?}"
            );
        }
        let (a, b) = (flat(&burn, &template), flat(&dense, &template));
        let largest = largest_difference(&a, &b);
        assert!(largest < 2e-5, "{case}: weights differ by up to {largest}");
        let (outputs_burn, outputs_dense) = {
            let (x, y) = batch(task);
            let table = trainyard_data::Table {
                x,
                y,
                n_features: INPUTS,
            };
            (burn.outputs(&table), dense.outputs(&table))
        };
        let largest = largest_difference(&outputs_burn, &outputs_dense);
        assert!(largest < 1e-4, "{case}: outputs differ by up to {largest}");
    }
}

#[test]
fn a_run_resumed_from_its_saved_state_continues_bit_for_bit() {
    let task = Task::Classification;
    let (_, mut whole, template) = learners(task, OptimizerKind::Adamw, Activation::Relu, 0.2);
    train(&mut whole, task, 3);
    let (weights, state) = (whole.weights().unwrap(), whole.optimizer_state().unwrap());
    assert!(optim::is_native_state(&state));
    let (_, mut resumed, _) = learners(task, OptimizerKind::Adamw, Activation::Relu, 0.2);
    resumed.load_weights(&weights).unwrap();
    resumed.load_optimizer_state(&state).unwrap();
    let (x, y) = batch(task);
    for step in 3..6 {
        let masks = || DropoutMasks {
            rng: SeededRng::derive(5, step),
        };
        let a = whole.step(x.clone(), &y, 0.01, &mut masks());
        let b = resumed.step(x.clone(), &y, 0.01, &mut masks());
        assert_eq!(a.to_bits(), b.to_bits(), "step {step}");
    }
    assert_eq!(flat(&whole, &template), flat(&resumed, &template));
    let mut other = Optimizer::new(&setup(task, OptimizerKind::Sgd, Activation::Relu, 0.0).0, 3);
    assert!(
        other.restore(&state).is_err(),
        "another shape's state is refused"
    );
}

#[test]
fn a_non_finite_loss_changes_nothing() {
    let task = Task::Regression;
    let (_, mut dense, template) = learners(task, OptimizerKind::Adam, Activation::Relu, 0.0);
    let before = flat(&dense, &template);
    let (x, mut y) = batch(task);
    y[0] = f32::NAN;
    let mut masks = DropoutMasks {
        rng: SeededRng::new(1),
    };
    assert!(dense.step(x, &y, 0.01, &mut masks).is_nan());
    assert_eq!(flat(&dense, &template), before);
    assert_eq!(
        dense.optimizer_state().unwrap(),
        Optimizer::new(&dense.hp, dense.params.len()).to_bytes()
    );
}

/// `channels` channels (one makes the first block direct), an odd width (the pool drops the
/// last column) and two blocks.
fn convolutional(channels: usize) -> (Hyperparameters, Architecture) {
    let image = [channels, 6, 5];
    let (mut hp, mut arch) = setup(
        Task::Classification,
        OptimizerKind::Adam,
        Activation::Relu,
        0.1,
    );
    hp.conv_channels = vec![3, 4];
    arch.n_inputs = image.iter().product();
    arch.conv_channels = vec![3, 4];
    arch.image_shape = Some(image);
    arch.hidden = vec![5];
    (hp, arch)
}

fn images(arch: &Architecture) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SeededRng::new(4);
    let x: Vec<f32> = (0..ROWS * arch.n_inputs)
        .map(|_| rng.normal() as f32)
        .collect();
    (x, (0..ROWS).map(|i| (i % 3) as f32).collect())
}

#[test]
fn a_cnn_trains_as_burn_does() {
    for channels in [1, 2] {
        cnn_trains_as_burn_does(channels);
    }
}

fn cnn_trains_as_burn_does(channels: usize) {
    let (hp, arch) = convolutional(channels);
    let task = Task::Classification;
    let device = Device::flex().autodiff();
    let template = init_network(&arch, &device, 3);
    let mut burn = BurnLearner::new(template.clone(), &hp, &arch, task);
    let mut dense = DenseLearner::new(template.clone(), &device, &hp, &arch, task);
    assert_eq!(
        flat(&burn, &template),
        flat(&dense, &template),
        "same start"
    );
    let (x, y) = images(&arch);
    for step in 0..4 {
        let masks = || DropoutMasks {
            rng: SeededRng::derive(9, step),
        };
        let a = burn.step(x.clone(), &y, 0.01, &mut masks());
        let b = dense.step(x.clone(), &y, 0.01, &mut masks());
        assert!((a - b).abs() < 1e-5, "step {step}: loss {a} vs {b}");
    }
    let (a, b) = (flat(&burn, &template), flat(&dense, &template));
    let largest = largest_difference(&a, &b);
    assert!(largest < 2e-5, "weights differ by up to {largest}");
    let table = trainyard_data::Table {
        x,
        y,
        n_features: arch.n_inputs,
    };
    let (a, b) = (burn.outputs(&table), dense.outputs(&table));
    let largest = largest_difference(&a, &b);
    assert!(largest < 1e-4, "outputs differ by up to {largest}");
}

/// A CNN's steps (pooling, Adam) land on the same bits with or without AVX2.
#[test]
fn steps_are_the_same_with_or_without_avx2() {
    let run = || {
        let (hp, arch) = convolutional(1);
        let device = Device::flex().autodiff();
        let template = init_network(&arch, &device, 3);
        let mut dense =
            DenseLearner::new(template.clone(), &device, &hp, &arch, Task::Classification);
        let (x, y) = images(&arch);
        for step in 0..3 {
            let mut masks = DropoutMasks {
                rng: SeededRng::derive(9, step),
            };
            dense.step(x.clone(), &y, 0.01, &mut masks);
        }
        flat(&dense, &template)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<u32>>()
    };
    let wide = run();
    crate::simd::baseline_only();
    assert!(run() == wide, "the baseline path differs");
}

/// With `precision: "bf16"` the products round their factors: the run stays close to the f32
/// run without being it, and a resumed run continues on the same bits.
#[test]
fn a_bf16_cnn_trains_close_to_f32_and_resumes_bit_for_bit() {
    // Wide enough that the second convolution's products run in bf16 (`bf16::rounds`); the
    // dense layer's, 24 rows tall, stay f32.
    let (mut hp, mut arch) = convolutional(2);
    hp.conv_channels = vec![8, 64];
    arch.conv_channels = vec![8, 64];
    arch.hidden = vec![64];
    let task = Task::Classification;
    let device = Device::flex().autodiff();
    let template = init_network(&arch, &device, 3);
    let mut f32_run = DenseLearner::new(template.clone(), &device, &hp, &arch, task);
    hp.precision = trainyard_core::hyperparameters::Precision::Bf16;
    let learner = || DenseLearner::new(template.clone(), &device, &hp, &arch, task);
    let (mut whole, mut resumed) = (learner(), learner());
    let (x, y) = images(&arch);
    let masks = |step| DropoutMasks {
        rng: SeededRng::derive(9, step),
    };
    for step in 0..4 {
        let a = f32_run.step(x.clone(), &y, 0.01, &mut masks(step));
        let b = whole.step(x.clone(), &y, 0.01, &mut masks(step));
        assert!(
            (a - b).abs() < 0.02 * a.abs(),
            "step {step}: loss {a} vs {b}"
        );
        if step == 1 {
            resumed.load_weights(&whole.weights().unwrap()).unwrap();
            resumed
                .load_optimizer_state(&whole.optimizer_state().unwrap())
                .unwrap();
        }
        if step >= 2 {
            let c = resumed.step(x.clone(), &y, 0.01, &mut masks(step));
            assert_eq!(b.to_bits(), c.to_bits(), "resumed, step {step}");
        }
    }
    let (a, b) = (flat(&f32_run, &template), flat(&whole, &template));
    let largest = largest_difference(&a, &b);
    assert!(largest > 0.0, "the bf16 run rounded nothing");
    // Adam moves a weight by about the learning rate whatever its gradient's size, so a tiny
    // gradient whose sign rounding flips can put one weight 2 x 0.01 per step apart; on
    // average the runs stay far closer.
    assert!(
        largest < 2.0 * 0.01 * 4.0,
        "weights differ by up to {largest}"
    );
    let mean = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    assert!(mean < 2e-3, "weights differ by {mean} on average");
    assert_eq!(flat(&whole, &template), flat(&resumed, &template));
}
