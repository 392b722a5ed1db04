//! The language model learns Shakespeare, attends only to the past, and is seeded.

use trainyard_core::hyperparameters::EarlyStopping;
use trainyard_data::text::{EncodedCorpus, builtin_corpus};
use trainyard_engine::Control;
use trainyard_engine::language::train::LmLoss;
use trainyard_engine::language::{
    Evaluation, Gpt, GptWeights, LmCheckpoint, LmData, LmHyperparameters, LmObserver,
    model::token_tensor, train,
};

/// Collects evaluations; checkpoints are kept in memory.
#[derive(Default)]
struct Collect {
    evaluations: Vec<Evaluation>,
    checkpoints: Vec<LmCheckpoint>,
}

impl LmObserver for Collect {
    fn evaluation(&mut self, evaluation: &Evaluation) {
        self.evaluations.push(evaluation.clone());
    }

    fn checkpoint(
        &mut self,
        checkpoint: &LmCheckpoint,
    ) -> Result<(), trainyard_engine::TrainError> {
        self.checkpoints.push(checkpoint.clone());
        Ok(())
    }
}

fn tiny(max_steps: u64) -> LmHyperparameters {
    LmHyperparameters {
        n_layer: 2,
        n_head: 2,
        n_embd: 64,
        block_size: 32,
        bias: true,
        batch_size: 16,
        max_steps,
        learning_rate: 3e-3,
        min_lr: 3e-4,
        warmup_steps: 20,
        weight_decay: 0.1,
        grad_clip: 1.0,
        eval_interval: 100,
        eval_batches: 8,
        seed: 7,
        ..LmHyperparameters::default()
    }
}

/// A slice of the corpus (it keeps the tests quick; the split is still contiguous), encoded.
struct Corpus {
    train: Vec<u32>,
    validation: Vec<u32>,
    vocab_size: usize,
}

impl Corpus {
    fn data(&self) -> LmData<'_> {
        LmData {
            train: &self.train,
            validation: &self.validation,
            vocab_size: self.vocab_size,
            teacher: None,
        }
    }
}

fn shakespeare() -> Corpus {
    let text = builtin_corpus("shakespeare").unwrap();
    let text: String = text.chars().take(400_000).collect();
    let corpus = EncodedCorpus::new(&text);
    Corpus {
        vocab_size: corpus.tokenizer.vocab_size(),
        train: corpus.train.to_vec(),
        validation: corpus.validation.to_vec(),
    }
}

#[test]
fn a_small_transformer_learns_shakespeare_and_resumes_exactly() {
    let corpus = shakespeare();
    let data = corpus.data();
    let hp = tiny(300);
    let mut seen = Collect::default();
    let run = train(&hp, &data, None, &Control::new(), &mut seen).unwrap();
    assert_eq!(run.evaluations.len(), 3);
    assert_eq!(
        seen.evaluations, run.evaluations,
        "every evaluation is reported as it happens"
    );
    assert_eq!(
        seen.checkpoints.len(),
        2,
        "a checkpoint after each evaluation but the last"
    );
    let first = &run.evaluations[0];
    let last = run.evaluations.last().unwrap();
    let uniform = (corpus.vocab_size as f64).ln();
    assert!(first.val_loss < uniform, "{first:?} vs uniform {uniform}");
    assert!(
        last.val_loss < 2.7 && last.val_loss < first.val_loss,
        "validation loss falls: {:?}",
        run.evaluations
    );
    assert!(last.tokens_per_second > 0.0);

    // Resuming from the first checkpoint reproduces the uninterrupted run exactly.
    let resumed = train(
        &hp,
        &data,
        Some(&seen.checkpoints[0]),
        &Control::new(),
        &mut Collect::default(),
    )
    .unwrap();
    assert_eq!(losses(&resumed.evaluations), losses(&run.evaluations));
}

#[test]
fn attention_sees_only_the_past() {
    let hp = tiny(1);
    let config = hp.config(20);
    let device = burn::tensor::Device::flex();
    let model = Gpt::new(&config, &device);
    let a = [1u32, 2, 3, 4, 5, 6, 7, 8];
    let mut b = a;
    b[6] = 19;
    b[7] = 11;
    let logits = |tokens: &[u32]| -> Vec<f32> {
        model
            .forward(token_tensor(tokens, 1, tokens.len(), &device))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let (la, lb) = (logits(&a), logits(&b));
    let per_position = 20;
    let before: f32 = la[..6 * per_position]
        .iter()
        .zip(&lb[..6 * per_position])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(
        before < 1e-5,
        "positions before the change are unchanged: {before}"
    );
    let after: f32 = la[6 * per_position..]
        .iter()
        .zip(&lb[6 * per_position..])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(after > 1e-4, "the changed positions do change: {after}");
}

/// Trains from scratch to the end, keeping nothing but the result.
fn run_to_end(hp: &LmHyperparameters, data: &LmData<'_>) -> trainyard_engine::language::LmRun {
    train(hp, data, None, &Control::new(), &mut Collect::default()).unwrap()
}

fn losses(evaluations: &[Evaluation]) -> Vec<(u64, f64, f64)> {
    evaluations
        .iter()
        .map(|e| (e.step, e.train_loss, e.val_loss))
        .collect()
}

#[test]
fn dropout_attention_dropout_gradient_accumulation_and_checkpointing_keep_runs_exact() {
    let corpus = shakespeare();
    let data = corpus.data();
    let hp = LmHyperparameters {
        dropout: 0.2,
        attention_dropout: 0.1,
        grad_accumulation: 2,
        max_steps: 40,
        eval_interval: 20,
        eval_batches: 2,
        ..tiny(40)
    };
    let mut seen = Collect::default();
    let run = train(&hp, &data, None, &Control::new(), &mut seen).unwrap();
    assert_eq!(run.evaluations.len(), 2);
    assert!(
        run.evaluations[0].grad_norm > 0.0,
        "{:?}",
        run.evaluations[0]
    );
    let resumed = train(
        &hp,
        &data,
        Some(&seen.checkpoints[0]),
        &Control::new(),
        &mut Collect::default(),
    )
    .unwrap();
    assert_eq!(losses(&resumed.evaluations), losses(&run.evaluations));
    let checkpointed = run_to_end(
        &LmHyperparameters {
            gradient_checkpointing: true,
            ..hp.clone()
        },
        &data,
    );
    assert_eq!(
        losses(&checkpointed.evaluations),
        losses(&run.evaluations),
        "gradient checkpointing changes memory, not results"
    );
    let without_dropout = LmHyperparameters {
        dropout: 0.0,
        ..hp.clone()
    };
    let without_attention_dropout = LmHyperparameters {
        attention_dropout: 0.0,
        ..hp.clone()
    };
    for (which, without) in [
        ("dropout", without_dropout),
        ("attention dropout", without_attention_dropout),
    ] {
        assert_ne!(
            losses(&run_to_end(&without, &data).evaluations),
            losses(&run.evaluations),
            "{which} changes training"
        );
    }
}

#[test]
fn weight_decay_shrinks_matrices_and_leaves_norms_and_biases_alone() {
    let corpus = shakespeare();
    let data = corpus.data();
    let one_step = |weight_decay: f64| {
        let hp = LmHyperparameters {
            weight_decay,
            warmup_steps: 0,
            eval_batches: 1,
            ..tiny(1)
        };
        let run = run_to_end(&hp, &data);
        GptWeights::from_model(&run.model, &hp.config(corpus.vocab_size))
    };
    let (plain, decayed) = (one_step(0.0), one_step(5.0));
    let (plain, decayed) = (plain.named(), decayed.named());
    for ((name, shape, a), (_, _, b)) in plain.iter().zip(&decayed) {
        if shape.len() == 1 {
            assert_eq!(a, b, "{name} is not decayed");
        } else {
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(norm(b) < norm(a), "{name} shrinks under weight decay");
        }
    }
}

#[test]
fn early_stopping_keeps_the_best_evaluation_and_resumes_with_it() {
    let corpus = shakespeare();
    let data = corpus.data();
    // A learning rate far too high: validation loss gets worse after the first evaluations.
    let hp = LmHyperparameters {
        learning_rate: 0.5,
        min_lr: 0.5,
        grad_clip: 0.0,
        warmup_steps: 0,
        max_steps: 400,
        eval_interval: 10,
        eval_batches: 2,
        early_stopping: Some(EarlyStopping {
            monitor: "val_loss".into(),
            patience: 2,
            min_delta: 0.0,
        }),
        ..tiny(400)
    };
    let mut seen = Collect::default();
    let run = train(&hp, &data, None, &Control::new(), &mut seen).unwrap();
    assert!(run.stopped_early, "{:?}", losses(&run.evaluations));
    assert!(run.evaluations.len() < 40);
    let best = run
        .evaluations
        .iter()
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .unwrap();
    assert_eq!(run.best_step, Some(best.step));
    let kept = trainyard_engine::language::evaluate(&run.model, &corpus.validation, &hp);
    assert!(
        (kept - best.val_loss).abs() < 1e-6,
        "the model kept is the best evaluation's: {kept} vs {}",
        best.val_loss
    );
    let resumed = train(
        &hp,
        &data,
        Some(&seen.checkpoints[0]),
        &Control::new(),
        &mut Collect::default(),
    )
    .unwrap();
    assert_eq!(losses(&resumed.evaluations), losses(&run.evaluations));
    assert_eq!(resumed.best_step, run.best_step);
}

#[test]
fn a_student_learns_from_a_teacher_alone_and_label_smoothing_raises_the_loss_floor() {
    let corpus = shakespeare();
    let data = corpus.data();
    let teacher = run_to_end(&tiny(150), &data);
    // Only the teacher's distribution: no loss from the text itself.
    let student_hp = LmHyperparameters {
        n_layer: 1,
        n_embd: 32,
        loss: LmLoss::Distillation,
        teacher: Some("teacher".into()),
        distillation_alpha: 1.0,
        distillation_temperature: 1.0,
        eval_interval: 50,
        ..tiny(150)
    };
    let taught = LmData {
        teacher: Some(&teacher.model),
        ..data
    };
    let student = run_to_end(&student_hp, &taught);
    let (first, last) = (&student.evaluations[0], student.evaluations.last().unwrap());
    assert!(
        last.val_loss < first.val_loss && last.val_loss < (corpus.vocab_size as f64).ln() - 0.5,
        "the student learns the text from the teacher alone: {:?}",
        losses(&student.evaluations)
    );

    let plain = run_to_end(&tiny(100), &data);
    let smoothed = run_to_end(
        &LmHyperparameters {
            label_smoothing: 0.2,
            ..tiny(100)
        },
        &data,
    );
    let train_loss = |run: &trainyard_engine::language::LmRun| run.evaluations[0].train_loss;
    assert!(
        train_loss(&smoothed) > train_loss(&plain) + 0.05,
        "smoothed targets cannot be matched as closely: {} vs {}",
        train_loss(&smoothed),
        train_loss(&plain)
    );
}
