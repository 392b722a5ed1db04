//! Sparse autoencoders: gradients against finite differences, each architecture's invariant,
//! dead-latent counting and resampling, the adaptive L1 coefficient, exact resume of a
//! multi-layer run, and the fraction of loss recovered on cases where it is known.

use std::sync::Arc;

use burn::tensor::Device;
use trainyard_data::SeededRng;
use trainyard_data::text::CharTokenizer;
use trainyard_data::tokenizer::TextTokenizer;
use trainyard_engine::Control;
use trainyard_engine::TrainError;
use trainyard_engine::language::{Gpt, GptConfig, Site};
use trainyard_engine::sae::Scratch;
use trainyard_engine::sae::codec::{decode_checkpoint, encode_checkpoint};
use trainyard_engine::sae::extract::Source;
use trainyard_engine::sae::features::{Splice, loss_recovered};
use trainyard_engine::sae::model::{Architecture, LossSettings, Sae};
use trainyard_engine::sae::spec::{DecoderNorm, SaeHyperparameters};
use trainyard_engine::sae::train::{LayerData, SaeCheckpoint, SaeEvaluation, SaeObserver, train};

/// Tokens built from a few sparse directions plus noise: what an SAE can learn exactly.
/// `draws` picks the tokens; the directions depend on `seed` alone.
fn synthetic(rows: usize, d: usize, seed: u64) -> Vec<f32> {
    synthetic_draws(rows, d, seed, seed)
}

fn synthetic_draws(rows: usize, d: usize, seed: u64, draws: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let directions: Vec<Vec<f32>> = (0..16)
        .map(|_| (0..d).map(|_| rng.normal() as f32).collect())
        .collect();
    let mut rng = SeededRng::new(draws ^ 0xD1CE);
    (0..rows)
        .flat_map(|_| {
            let mut x: Vec<f32> = (0..d).map(|_| 0.05 * rng.normal() as f32).collect();
            for _ in 0..3 {
                let dir = &directions[rng.below(16)];
                let weight = 1.0 + rng.next_f64() as f32;
                x.iter_mut().zip(dir).for_each(|(v, u)| *v += weight * u);
            }
            x
        })
        .collect()
}

fn layer(layer: usize, d: usize, seed: u64) -> LayerData {
    LayerData {
        layer,
        d_in: d,
        scale: 1.0,
        train: synthetic(2048, d, seed),
        validation: synthetic_draws(256, d, seed, seed + 100),
    }
}

fn hp(architecture: Architecture) -> SaeHyperparameters {
    SaeHyperparameters {
        architecture,
        expansion_factor: 4,
        k: 4,
        batch_size: 128,
        max_steps: 120,
        log_interval: 40,
        learning_rate: 3e-3,
        warmup_steps: 5,
        lr_decay_steps: 20,
        l1_coefficient: 0.5,
        l1_warmup_steps: 10,
        dead_window_tokens: 1024,
        decoder_norm: if architecture == Architecture::Relu {
            DecoderNorm::Penalty
        } else {
            DecoderNorm::Unit
        },
        ..SaeHyperparameters::default()
    }
}

#[derive(Default)]
struct Recorder {
    evaluations: Vec<SaeEvaluation>,
    checkpoints: Vec<SaeCheckpoint>,
    resampled: Vec<(u64, usize, usize)>,
}

impl SaeObserver for Recorder {
    fn step(&mut self, _done: u64) {}
    fn evaluation(&mut self, e: &SaeEvaluation) {
        self.evaluations.push(e.clone());
    }
    fn checkpoint(&mut self, c: &SaeCheckpoint) -> Result<(), TrainError> {
        self.checkpoints.push(c.clone());
        Ok(())
    }
    fn resampled(&mut self, step: u64, layer: usize, latents: usize) {
        self.resampled.push((step, layer, latents));
    }
}

fn loss_of(sae: &mut Sae, x: &[f32], settings: &LossSettings, dead: &[bool]) -> f64 {
    sae.clone()
        .step(x, settings, dead, &mut Scratch::default())
        .2
        .loss()
}

/// Central differences on a few entries of every tensor agree with the hand-written gradients.
/// With dead latents, AuxK's target (the main reconstruction's residual) is held fixed, as
/// SAELens detaches it; `k = 0` makes that residual depend on `b_dec` alone, so every other
/// tensor's finite difference is exact.
fn check_gradients(
    architecture: Architecture,
    norm_weighted: bool,
    dead_fraction: usize,
    k: usize,
) {
    let (d, m) = (6, 12);
    let mut rng = SeededRng::new(5);
    let mut sae = Sae::init(d, m, &mut rng);
    for v in sae.b_enc.iter_mut().chain(sae.b_dec.iter_mut()) {
        *v = 0.1 * rng.normal() as f32;
    }
    for v in &mut sae.w_dec {
        *v *= 1.0 + 0.3 * rng.next_f64() as f32;
    }
    let x = synthetic(10, d, 9);
    let settings = LossSettings {
        architecture,
        k,
        l1: 0.3,
        norm_weighted_penalty: norm_weighted,
        aux_k: 2,
        aux_coefficient: 0.5,
    };
    let dead: Vec<bool> = (0..m)
        .map(|j| j % dead_fraction.max(1) == 0 && dead_fraction > 0)
        .collect();
    let (grads, _, _) = sae
        .clone()
        .step(&x, &settings, &dead, &mut Scratch::default());
    let h = 2e-4f32;
    let tensors: [(&str, &[f32]); 4] = [
        ("w_enc", &grads.w_enc),
        ("b_enc", &grads.b_enc),
        ("w_dec", &grads.w_dec),
        ("b_dec", &grads.b_dec),
    ];
    for (t, (name, analytic)) in tensors.iter().enumerate() {
        if dead_fraction > 0 && *name == "b_dec" {
            continue;
        }
        for i in (0..analytic.len()).step_by(analytic.len() / 7 + 1) {
            let mut plus = sae.clone();
            let mut minus = sae.clone();
            param(&mut plus, t)[i] += h;
            param(&mut minus, t)[i] -= h;
            let numeric = (loss_of(&mut plus, &x, &settings, &dead)
                - loss_of(&mut minus, &x, &settings, &dead))
                / (2.0 * f64::from(h));
            let got = f64::from(analytic[i]);
            assert!(
                (numeric - got).abs() < 2e-3 + 2e-2 * numeric.abs(),
                "{architecture:?} {name}[{i}]: analytic {got}, numeric {numeric}"
            );
        }
    }
}

fn param(s: &mut Sae, t: usize) -> &mut Vec<f32> {
    match t {
        0 => &mut s.w_enc,
        1 => &mut s.b_enc,
        2 => &mut s.w_dec,
        _ => &mut s.b_dec,
    }
}

#[test]
fn gradients_match_finite_differences() {
    check_gradients(Architecture::Relu, true, 0, 0);
    check_gradients(Architecture::Relu, false, 0, 0);
    check_gradients(Architecture::Topk, false, 0, 3);
    // AuxK alone: a third of the latents dead, none active in the main codes.
    check_gradients(Architecture::Topk, false, 3, 0);
}

#[test]
fn topk_fires_at_most_k_latents_and_keeps_unit_decoder_norms() {
    let hp = hp(Architecture::Topk);
    let data = [layer(0, 16, 1)];
    let mut recorder = Recorder::default();
    let run = train(&hp, &data, None, &Control::new(), &mut recorder).unwrap();
    let sae = &run.layers[0].sae;
    let codes = sae.encode(&data[0].validation, Architecture::Topk, hp.k);
    assert!(codes.rows.iter().all(|r| r.len() <= hp.k));
    let mean = codes.nonzeros() as f64 / codes.rows.len() as f64;
    assert!(mean > 0.9 * hp.k as f64, "L0 {mean}");
    for norm in sae.decoder_norms() {
        assert!((norm - 1.0).abs() < 1e-5, "decoder norm {norm}");
    }
    let first = &recorder.evaluations[0].values;
    let last = &recorder.evaluations.last().unwrap().values;
    assert!(
        last["val_explained_variance"] > first["val_explained_variance"],
        "{first:?} -> {last:?}"
    );
    assert!(last["val_explained_variance"] > 0.8, "{last:?}");
    assert!(last["explained_variance"].is_finite() && last["l0"] <= hp.k as f64);
}

#[test]
fn batch_topk_averages_k_per_token_and_learns_a_threshold() {
    let hp = hp(Architecture::BatchTopk);
    let data = [layer(0, 16, 2)];
    let run = train(&hp, &data, None, &Control::new(), &mut Recorder::default()).unwrap();
    let sae = &run.layers[0].sae;
    assert!(sae.threshold > 0.0);
    let (pre, _) = sae.pre_activations(&data[0].train[..128 * 16]);
    let (codes, _) =
        trainyard_engine::sae::model::select(&pre, sae.d_sae, Architecture::BatchTopk, hp.k);
    assert_eq!(
        codes.nonzeros(),
        128 * hp.k,
        "k per token on average over the batch"
    );
}

#[test]
fn relu_with_a_target_l0_adapts_its_coefficient_towards_it() {
    let mut hp = hp(Architecture::Relu);
    hp.target_l0 = Some(6.0);
    hp.max_steps = 400;
    hp.log_interval = 100;
    let data = [layer(0, 16, 3)];
    let mut recorder = Recorder::default();
    let run = train(&hp, &data, None, &Control::new(), &mut recorder).unwrap();
    let l0 = recorder.evaluations.last().unwrap().values["l0"];
    assert!(
        (l0 - 6.0).abs() / 6.0 < 0.2,
        "L0 {l0} against a target of 6"
    );
    assert_ne!(run.layers[0].l1, hp.l1_coefficient, "the coefficient moved");
}

#[test]
fn dead_latents_are_counted_over_a_window_and_revived_by_resampling() {
    let mut hp = hp(Architecture::Relu);
    hp.max_steps = 60;
    hp.log_interval = 30;
    hp.dead_window_tokens = 128 * 20;
    let data = [layer(0, 16, 4)];
    // Latents 0..8 start with a hugely negative bias: they cannot fire.
    let mut start = trainyard_engine::sae::train::init_layer(&hp, &data[0]);
    start.sae.b_enc[..8].fill(-1e4);
    let resume = |state: trainyard_engine::sae::train::LayerState| SaeCheckpoint {
        step: 0,
        evaluations: vec![],
        layers: vec![state],
    };
    let mut quiet = Recorder::default();
    train(
        &hp,
        &data,
        Some(resume(start.clone())),
        &Control::new(),
        &mut quiet,
    )
    .unwrap();
    let dead = quiet.evaluations.last().unwrap().values["dead_latents"];
    assert!(
        dead >= 8.0,
        "the 8 silenced latents are dead after the window: {dead}"
    );
    assert!(quiet.resampled.is_empty());

    hp.resample_dead = true;
    hp.resample_interval = 25;
    let mut revived = Recorder::default();
    let run = train(
        &hp,
        &data,
        Some(resume(start)),
        &Control::new(),
        &mut revived,
    )
    .unwrap();
    assert!(
        revived
            .resampled
            .iter()
            .any(|&(step, _, n)| step == 25 && n >= 8),
        "{:?}",
        revived.resampled
    );
    let sae = &run.layers[0].sae;
    assert!(sae.b_enc[..8].iter().all(|b| b.abs() < 1.0), "biases reset");
    let codes = sae.encode(&data[0].train, Architecture::Relu, 0);
    let fired: usize = (0..8)
        .filter(|&j| {
            codes
                .rows
                .iter()
                .any(|r| r.iter().any(|&(i, _)| i as usize == j))
        })
        .count();
    assert!(fired >= 4, "resampled latents fire again: {fired} of 8");
}

#[test]
fn a_paused_multi_layer_run_resumes_bit_identically() {
    let hp = hp(Architecture::Topk);
    let data = [layer(1, 16, 6), layer(3, 16, 7)];
    let straight = train(&hp, &data, None, &Control::new(), &mut Recorder::default()).unwrap();

    struct PauseAt(Arc<Control>, u64, Recorder);
    impl SaeObserver for PauseAt {
        fn step(&mut self, done: u64) {
            if done == self.1 {
                self.0.pause();
            }
        }
        fn evaluation(&mut self, e: &SaeEvaluation) {
            self.2.evaluation(e)
        }
        fn checkpoint(&mut self, c: &SaeCheckpoint) -> Result<(), TrainError> {
            self.2.checkpoint(c)
        }
        fn resampled(&mut self, _: u64, _: usize, _: usize) {}
    }
    let control = Control::new();
    let mut pausing = PauseAt(control.clone(), 57, Recorder::default());
    let first = train(&hp, &data, None, &control, &mut pausing).unwrap();
    assert!(first.stopped.is_some());
    let saved = pausing.2.checkpoints.last().unwrap();
    assert_eq!(saved.step, 57);
    let restored = decode_checkpoint(&encode_checkpoint(saved)).unwrap();
    assert_eq!(&restored, saved, "the checkpoint file round-trips");
    let resumed = train(
        &hp,
        &data,
        Some(restored),
        &Control::new(),
        &mut Recorder::default(),
    )
    .unwrap();
    for (a, b) in straight.layers.iter().zip(&resumed.layers) {
        assert_eq!(a.sae, b.sae, "layer {} weights", a.layer);
        assert_eq!(a.adam, b.adam);
        assert_eq!(a.since_fired, b.since_fired);
    }
    let metrics = |run: &trainyard_engine::sae::SaeRun| {
        let mut values = run.evaluations.last().unwrap().values.clone();
        values.remove("tokens_per_second");
        values
    };
    assert_eq!(
        metrics(&straight),
        metrics(&resumed),
        "metrics, apart from speed"
    );
}

fn random_source() -> Source {
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(40);
    let tokenizer = TextTokenizer::Char(CharTokenizer::fit(&text));
    let config = GptConfig {
        vocab_size: tokenizer.vocab_size(),
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        block_size: 16,
        bias: true,
    };
    // Seeded: an unseeded draw can leave a layer whose zeroing barely moves the loss.
    let device = Device::flex();
    device.seed(11);
    Source {
        model: Gpt::new(&config, &device),
        config,
        tokenizer,
    }
}

#[test]
fn an_identity_autoencoder_recovers_all_of_the_loss_and_a_zero_one_none() {
    let source = random_source();
    let windows = source
        .tokenizer
        .encode(&"the lazy dog jumps over the quick brown fox".repeat(4))[..64]
        .to_vec();
    let d = source.config.n_embd;
    // ReLU passes x - b_dec through unchanged when b_dec pushes everything positive.
    let mut identity = Sae {
        d_in: d,
        d_sae: d,
        w_enc: vec![0.0; d * d],
        b_enc: vec![0.0; d],
        w_dec: vec![0.0; d * d],
        b_dec: vec![-100.0; d],
        threshold: 0.0,
    };
    for i in 0..d {
        identity.w_enc[i * d + i] = 1.0;
        identity.w_dec[i * d + i] = 1.0;
    }
    let splice = Splice::Autoencoder {
        sae: &identity,
        scale: 1.0,
        architecture: Architecture::Relu,
        k: 0,
    };
    let perfect = loss_recovered(&source, &windows, 1, Site::ResidPost, &splice);
    assert!(
        (perfect.fraction() - 1.0).abs() < 1e-3,
        "{perfect:?}: {}",
        perfect.fraction()
    );
    assert!((perfect.original - perfect.zero_ablated).abs() > 1e-3);
    let mut zero = identity.clone();
    zero.w_dec.fill(0.0);
    zero.b_dec.fill(0.0);
    let splice = Splice::Autoencoder {
        sae: &zero,
        scale: 1.0,
        architecture: Architecture::Relu,
        k: 0,
    };
    let nothing = loss_recovered(&source, &windows, 0, Site::MlpOut, &splice);
    assert!(nothing.fraction().abs() < 1e-6, "{nothing:?}");
}

#[test]
fn activations_come_from_one_pass_for_every_layer() {
    let source = random_source();
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(200);
    let mut seen = vec![];
    let extracted = trainyard_engine::sae::extract::extract(
        &source,
        &text,
        &[0, 1],
        Site::ResidPost,
        512,
        true,
        &Control::new(),
        &mut |done, total| seen.push((done, total)),
    )
    .unwrap()
    .unwrap();
    assert_eq!(extracted.layers.len(), 2);
    assert_eq!(extracted.layers[0].rows(), 512);
    assert_eq!(extracted.windows.len(), 512);
    assert_ne!(extracted.layers[0].train, extracted.layers[1].train);
    let (done, total) = *seen.last().unwrap();
    assert_eq!(done, total, "progress reaches the end");
    // Normalised: mean norm sqrt(d).
    let d = 16;
    let norms: f64 = extracted.layers[1]
        .train
        .chunks(d)
        .map(|r| r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / 512.0;
    assert!((norms - 4.0).abs() < 1e-3, "{norms}");
}
