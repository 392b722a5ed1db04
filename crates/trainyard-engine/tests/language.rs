//! The language model learns Shakespeare, attends only to the past, and is seeded.

use trainyard_data::text::{EncodedCorpus, builtin_corpus};
use trainyard_engine::Control;
use trainyard_engine::language::{
    Evaluation, Gpt, LmCheckpoint, LmData, LmHyperparameters, LmObserver, model::token_tensor,
    train,
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
    }
}

fn shakespeare() -> (Vec<u32>, Vec<u32>, usize) {
    let text = builtin_corpus("shakespeare").unwrap();
    // A slice keeps the test quick; the split is still contiguous.
    let text: String = text.chars().take(400_000).collect();
    let corpus = EncodedCorpus::new(&text);
    let vocab_size = corpus.tokenizer.vocab_size();
    (corpus.train, corpus.validation, vocab_size)
}

#[test]
fn a_small_transformer_learns_shakespeare_and_resumes_exactly() {
    let (train_tokens, validation, vocab_size) = shakespeare();
    let data = LmData {
        train: &train_tokens,
        validation: &validation,
        vocab_size,
    };
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
    let uniform = (vocab_size as f64).ln();
    assert!(first.val_loss < uniform, "{first:?} vs uniform {uniform}");
    assert!(
        last.val_loss < 2.7 && last.val_loss < first.val_loss,
        "validation loss falls: {:?}",
        run.evaluations
    );
    assert!(last.tokens_per_second > 0.0);

    // Resuming from the first checkpoint reproduces the uninterrupted run exactly.
    let losses = |evaluations: &[Evaluation]| {
        evaluations
            .iter()
            .map(|e| (e.step, e.train_loss, e.val_loss))
            .collect::<Vec<_>>()
    };
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
