//! The text classifier learns labels, ignores padding, starts from a language model's weights
//! and leaves frozen parts exactly as they were.

use trainyard_data::text::{EncodedCorpus, builtin_corpus};
use trainyard_engine::Control;
use trainyard_engine::language::classifier::{
    ClassifierData, LabeledTokens, Labels, Pooling, evaluate, probabilities,
};
use trainyard_engine::language::steps::{train_steps, weights};
use trainyard_engine::language::{
    Evaluation, GptWeights, LmCheckpoint, LmData, LmHyperparameters, LmObserver, train,
};

struct Quiet;

impl LmObserver for Quiet {
    fn evaluation(&mut self, _: &Evaluation) {}
    fn checkpoint(&mut self, _: &LmCheckpoint) -> Result<(), trainyard_engine::TrainError> {
        Ok(())
    }
}

fn hp(max_steps: u64) -> LmHyperparameters {
    LmHyperparameters {
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        block_size: 32,
        batch_size: 16,
        max_steps,
        learning_rate: 3e-3,
        warmup_steps: 10,
        eval_interval: max_steps,
        ..LmHyperparameters::default()
    }
}

/// Lines of Shakespeare labeled by whether they end with a question mark: a label the text
/// itself decides.
fn questions(
    tokenizer: &trainyard_data::tokenizer::TextTokenizer,
    lines: &[&str],
) -> LabeledTokens {
    let mut set = LabeledTokens::default();
    for line in lines {
        let mut tokens = tokenizer.encode(line);
        tokens.truncate(32);
        set.labels.push(u32::from(line.trim_end().ends_with('?')));
        set.rows.push(tokens);
    }
    set
}

#[test]
fn a_classifier_learns_ignores_padding_and_keeps_frozen_parts() {
    let text: String = builtin_corpus("shakespeare")
        .unwrap()
        .chars()
        .take(200_000)
        .collect();
    let corpus = EncodedCorpus::new(&text);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| (10..32).contains(&l.len()))
        .collect();
    let (train_lines, validation_lines) = lines.split_at(lines.len() * 9 / 10);
    let train_set = questions(&corpus.tokenizer, train_lines);
    let validation = questions(&corpus.tokenizer, validation_lines);

    // A language model to start from.
    let lm_hp = hp(60);
    let lm = train(
        &lm_hp,
        &LmData {
            train: &corpus.train,
            validation: &corpus.validation,
            vocab_size: corpus.tokenizer.vocab_size(),
            teacher: None,
        },
        None,
        &Control::new(),
        &mut Quiet,
    )
    .unwrap();
    let config = lm_hp.config(corpus.tokenizer.vocab_size());
    let lm_bytes = weights(&lm.model).unwrap();
    let data = ClassifierData {
        train: &train_set,
        validation: &validation,
        classes: 2,
        init: Some(&lm_bytes),
        config: config.clone(),
    };
    let freeze = vec!["embeddings".to_string(), "blocks.0".to_string()];
    let cls_hp = LmHyperparameters {
        pooling: Pooling::Last,
        freeze: freeze.clone(),
        ..hp(150)
    };
    let objective = Labels::new(&cls_hp, &data, Some(vec![1.0, 3.0]));
    let run = train_steps(&cls_hp, &objective, None, &Control::new(), &mut Quiet).unwrap();
    let accuracy = run.evaluations.last().unwrap().values["accuracy"];
    let share_of_questions = validation.labels.iter().filter(|&&l| l == 1).count() as f64
        / validation.labels.len() as f64;
    assert!(
        accuracy > 0.9 && accuracy > 1.0 - share_of_questions + 0.02,
        "it learns the label, not just the majority: accuracy {accuracy}, questions {share_of_questions}"
    );
    let (_, metrics) = evaluate(&run.model, &validation, Pooling::Last, 7, 2);
    assert!(
        (metrics["accuracy"] - accuracy).abs() < 1e-9,
        "batching does not change answers"
    );

    // A text's probabilities are the same alone and padded in a batch with a longer one.
    let rows = vec![validation.rows[0].clone(), validation.rows[1].clone()];
    let together = probabilities(&run.model, &rows, Pooling::Last, 2);
    let alone = probabilities(&run.model, &rows[..1], Pooling::Last, 1);
    let difference = (together[0][0] - alone[0][0]).abs();
    assert!(
        difference < 1e-5,
        "padding changed a prediction by {difference}"
    );

    // Frozen parts are exactly the language model's; the rest moved.
    let before = GptWeights::from_model(&lm.model, &config);
    let after = GptWeights::from_model(&run.model.body, &config);
    for ((name, _, a), (_, _, b)) in before.named().iter().zip(after.named().iter()) {
        let frozen = name.starts_with("wte") || name.starts_with("wpe") || name.starts_with("h.0.");
        if frozen {
            assert_eq!(a, b, "{name} is frozen");
        } else {
            assert_ne!(a, b, "{name} trains");
        }
    }
}
