//! A trained language model outside the training network: the key-value-cached decoder that
//! serves it gives the network's logits, and its export bundle, read by a plain numpy
//! reimplementation written from the model card, gives them too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use trainyard_data::text::{EncodedCorpus, builtin_corpus};
use trainyard_data::tokenizer::TokenizerKind;
use trainyard_engine::Control;
use trainyard_engine::family::{BundleFile, ExportInfo};
use trainyard_engine::language::bundle::{Bundle, Head, files};
use trainyard_engine::language::classifier::{
    ClassifierData, LabeledTokens, Labels, Pooling, padded,
};
use trainyard_engine::language::model::token_tensor;
use trainyard_engine::language::steps::train_steps;
use trainyard_engine::language::weights::dense;
use trainyard_engine::language::{
    Decoder, Evaluation, Gpt, GptWeights, LmCheckpoint, LmData, LmHyperparameters, LmObserver,
    train,
};

struct Quiet;

impl LmObserver for Quiet {
    fn evaluation(&mut self, _: &Evaluation) {}
    fn checkpoint(&mut self, _: &LmCheckpoint) -> Result<(), trainyard_engine::TrainError> {
        Ok(())
    }
}

/// A model trained for a few dozen steps: far enough from its initialisation that every
/// weight matters to the logits.
fn trained(bias: bool) -> (Gpt, LmHyperparameters, EncodedCorpus) {
    trained_with(bias, TokenizerKind::Char)
}

fn trained_with(bias: bool, tokenizer: TokenizerKind) -> (Gpt, LmHyperparameters, EncodedCorpus) {
    let text: String = builtin_corpus("shakespeare")
        .unwrap()
        .chars()
        .take(100_000)
        .collect();
    let corpus = EncodedCorpus::fit(&text, tokenizer, 400).unwrap();
    let hp = LmHyperparameters {
        tokenizer,
        vocab_size: 400,
        n_layer: 2,
        n_head: 4,
        n_embd: 32,
        block_size: 24,
        bias,
        batch_size: 8,
        max_steps: 40,
        learning_rate: 1e-2,
        warmup_steps: 5,
        eval_interval: 40,
        eval_batches: 1,
        ..LmHyperparameters::default()
    };
    let data = LmData {
        train: &corpus.train,
        validation: &corpus.validation,
        vocab_size: corpus.tokenizer.vocab_size(),
        teacher: None,
    };
    let run = train(&hp, &data, None, &Control::new(), &mut Quiet).unwrap();
    (run.model, hp, corpus)
}

/// The network's logits for each position of `tokens`, row by row.
fn network_logits(model: &Gpt, tokens: &[u32], vocab: usize) -> Vec<Vec<f32>> {
    let flat = model
        .forward(token_tensor(tokens, 1, tokens.len(), &Device::flex()))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    flat.chunks(vocab).map(<[f32]>::to_vec).collect()
}

fn max_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn cached_decoding_gives_the_networks_logits_with_and_without_biases() {
    for bias in [true, false] {
        let (model, hp, corpus) = trained(bias);
        let config = hp.config(corpus.tokenizer.vocab_size());
        let weights = GptWeights::from_model(&model, &config);
        let prompt = &corpus.validation[..hp.block_size];
        let expected = network_logits(&model, prompt, config.vocab_size);
        let mut decoder = Decoder::new(&weights);
        let cached: Vec<Vec<f32>> = prompt.iter().map(|&t| decoder.step(t)).collect();
        let worst = max_difference(&expected, &cached);
        assert!(worst < 1e-4, "bias {bias}: logits differ by {worst}");
        assert!(decoder.is_full());
        let spread = expected[5].iter().copied().fold(f32::MIN, f32::max)
            - expected[5].iter().copied().fold(f32::MAX, f32::min);
        assert!(
            spread > 1.0,
            "a trained model's logits are not flat: {spread}"
        );
    }
}

/// A Python with numpy, safetensors and tokenizers: a venv of pinned versions under the build
/// directory, made on first use. None (a loud skip, a failure in CI) when it cannot be made.
/// Tests run in parallel processes, so each builds in a folder of its own and renames it into
/// place: the first to finish wins, and no process sees a half-made venv.
fn numpy_python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("numpy-venv");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import numpy, safetensors, tokenizers"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Some(python);
    }
    let staging = venv.with_extension(format!("staging-{}", std::process::id()));
    eprintln!(
        "creating {} (numpy, safetensors, tokenizers)",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&staging);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&staging)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(staging.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "numpy==2.2.6",
                "safetensors==0.6.2",
                "tokenizers==0.22.1",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if made && !ready(&python) {
        // A venv left half-made by an interrupted run is replaced.
        let _ = std::fs::remove_dir_all(&venv);
        let _ = std::fs::rename(&staging, &venv);
    }
    let _ = std::fs::remove_dir_all(&staging);
    ready(&python).then_some(python)
}

#[test]
fn the_export_bundle_runs_in_plain_numpy_with_the_same_logits() {
    for tokenizer in [TokenizerKind::Char, TokenizerKind::Bpe] {
        check_bundle_in_numpy(tokenizer);
    }
}

fn check_bundle_in_numpy(tokenizer: TokenizerKind) {
    let Some(python) = numpy_python() else {
        let why = "SKIPPED: no Python venv with numpy, safetensors and tokenizers could be made \
                   (needs python3 with venv and PyPI); the export bundle was not checked";
        assert!(std::env::var("TRAINYARD_STRICT_SKIPS").is_err(), "{why}");
        eprintln!("{why}");
        return;
    };
    let (model, hp, corpus) = trained_with(true, tokenizer);
    let config = hp.config(corpus.tokenizer.vocab_size());
    let weights = GptWeights::from_model(&model, &config);
    let about = ExportInfo {
        model_id: "m1".into(),
        model_name: "bard".into(),
        dataset: "shakespeare".into(),
        run_id: "r1".into(),
    };
    let metrics = BTreeMap::from([("val_loss".to_string(), 2.5)]);
    let bundle = files(&Bundle {
        weights: &weights,
        tokenizer: &corpus.tokenizer,
        hyperparameters: &hp,
        metrics: &metrics,
        about: &about,
        head: None,
    })
    .unwrap();
    let names: Vec<&str> = bundle.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "metrics.json",
            "training_args.json",
            "README.md"
        ]
    );

    let prompt = "ROMEO:\nWhat light!";
    let (ids, numpy) = numpy_logits(&python, &bundle, prompt);
    let tokens = corpus.tokenizer.encode(prompt);
    assert_eq!(
        ids, tokens,
        "{tokenizer:?}: tokenizer.json encodes as Trainyard does"
    );
    let ours = network_logits(&model, &tokens, config.vocab_size);
    let worst = max_difference(&ours, &numpy);
    assert!(
        worst < 1e-4,
        "{tokenizer:?}: numpy's logits differ by {worst}"
    );
    eprintln!("{tokenizer:?}: numpy's logits are within {worst:e} of Trainyard's");

    let card = String::from_utf8(bundle[5].bytes.clone()).unwrap();
    for expected in [
        "bard",
        "shakespeare",
        "public domain",
        "val_loss",
        "Intended use",
    ] {
        assert!(card.contains(expected), "the model card says {expected}");
    }
}

/// Runs the numpy reimplementation on a bundle written to a folder: (token ids, logits).
fn numpy_logits(python: &Path, bundle: &[BundleFile], prompt: &str) -> (Vec<u32>, Vec<Vec<f32>>) {
    let folder = tempfile::tempdir().unwrap();
    for file in bundle {
        std::fs::write(folder.path().join(&file.name), &file.bytes).unwrap();
    }
    let output = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gpt_numpy.py"))
        .arg(folder.path())
        .arg(prompt)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        serde_json::from_value(answer["ids"].clone()).unwrap(),
        serde_json::from_value(answer["logits"].clone()).unwrap(),
    )
}

#[test]
fn a_classifier_bundle_runs_in_plain_numpy_with_the_same_class_logits() {
    let Some(python) = numpy_python() else {
        let why = "SKIPPED: no Python venv with numpy, safetensors and tokenizers could be made; \
                   the classifier bundle was not checked";
        assert!(std::env::var("TRAINYARD_STRICT_SKIPS").is_err(), "{why}");
        eprintln!("{why}");
        return;
    };
    let (_, lm_hp, corpus) = trained(true);
    let config = lm_hp.config(corpus.tokenizer.vocab_size());
    let texts = [
        "To be, or not to be?",
        "Good night, prince.",
        "Is this a dagger?",
        "Alas.",
    ];
    let rows: Vec<Vec<u32>> = texts.iter().map(|t| corpus.tokenizer.encode(t)).collect();
    let labels: Vec<u32> = texts.iter().map(|t| u32::from(t.ends_with('?'))).collect();
    let set = LabeledTokens {
        rows: rows.clone(),
        labels,
    };
    for pooling in [Pooling::Mean, Pooling::Last] {
        let hp = LmHyperparameters {
            max_steps: 10,
            eval_interval: 10,
            pooling,
            ..lm_hp.clone()
        };
        let data = ClassifierData {
            train: &set,
            validation: &set,
            classes: 2,
            init: None,
            config: config.clone(),
        };
        let objective = Labels::new(&hp, &data, None);
        let run = train_steps(&hp, &objective, None, &Control::new(), &mut Quiet).unwrap();
        let weights = GptWeights::from_model(&run.model.body, &config);
        let head = dense(&run.model.head);
        let classes = ["statement".to_string(), "question".to_string()];
        let metrics = BTreeMap::new();
        let bundle = files(&Bundle {
            weights: &weights,
            tokenizer: &corpus.tokenizer,
            hyperparameters: &hp,
            metrics: &metrics,
            about: &ExportInfo {
                model_id: "c1".into(),
                model_name: "critic".into(),
                dataset: "lines".into(),
                run_id: "r1".into(),
            },
            head: Some(Head {
                dense: &head,
                classes: &classes,
                pooling,
            }),
        })
        .unwrap();
        let (ids, numpy) = numpy_logits(&python, &bundle, texts[0]);
        assert_eq!(ids, rows[0]);
        let (tokens, lengths) = padded(&[&rows[0][..]], &Device::flex());
        let ours = run
            .model
            .forward(tokens, &lengths, pooling, None)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let worst = max_difference(&[ours], &numpy);
        assert!(
            worst < 1e-4,
            "{pooling:?}: numpy's class logits differ by {worst}"
        );
        let card = String::from_utf8(bundle[5].bytes.clone()).unwrap();
        assert!(
            card.contains("Classification head") && card.contains("question"),
            "{card}"
        );
    }
}
