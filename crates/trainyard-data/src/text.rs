//! Text for language models: a corpus split into training and validation by contiguous blocks
//! (so no validation text ever appears inside a training window), a character tokenizer, and
//! fixed-length windows drawn at positions that are a pure function of (seed, step), so a
//! resumed run sees exactly the batches an uninterrupted one would.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use trainyard_core::Task;

use crate::tokenizer::{TextTokenizer, TokenizerKind};
use crate::tokens::Tokens;
use crate::{DataError, Dataset, DatasetInfo, SeededRng, Table, raw_builtin_bytes};

/// The shortest corpus worth splitting: its validation tenth must hold a few windows.
pub const MIN_CORPUS_CHARS: usize = 1_000;

/// A text corpus as a dataset: no table, its size in characters as its row count.
pub fn corpus_dataset(
    name: &str,
    text: String,
    description: &str,
    license: &str,
) -> Result<Dataset, DataError> {
    let characters = text.chars().count();
    if characters < MIN_CORPUS_CHARS {
        return Err(DataError::Text(format!(
            "a text corpus needs at least {MIN_CORPUS_CHARS} characters; this one has {characters}"
        )));
    }
    Ok(Dataset {
        info: DatasetInfo {
            name: name.into(),
            description: description.into(),
            task: Task::Text,
            n_rows: characters,
            n_features: 0,
            feature_names: vec![],
            target_name: String::new(),
            classes: None,
            image_shape: None,
            test_rows: None,
            license: license.into(),
            extracted_from: None,
        },
        table: Table {
            x: vec![],
            y: vec![],
            n_features: 0,
        },
        test: None,
        text: Some(Arc::from(text)),
        texts: None,
        activations: None,
    })
}

/// An uploaded plain-text corpus: UTF-8 (a byte-order mark is dropped), at least
/// [`MIN_CORPUS_CHARS`] characters.
pub fn parse_corpus(name: &str, bytes: &[u8]) -> Result<Dataset, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        DataError::Text(format!(
            "a text corpus must be UTF-8; byte {} is not; convert it, e.g. with iconv -t UTF-8",
            e.valid_up_to()
        ))
    })?;
    corpus_dataset(
        name,
        text.to_string(),
        "uploaded text corpus",
        "provided by the uploader",
    )
}

/// The built-in corpora by dataset name.
pub const BUILTIN_CORPORA: [&str; 1] = ["shakespeare"];

/// The text of a built-in corpus.
pub fn builtin_corpus(name: &str) -> Result<String, DataError> {
    let file = match name {
        "shakespeare" => "shakespeare.txt.gz",
        other => return Err(DataError::Unknown(other.to_string())),
    };
    let bytes = raw_builtin_bytes(file)?;
    String::from_utf8(bytes).map_err(|e| DataError::Unknown(format!("{name}: not UTF-8 ({e})")))
}

/// A corpus cut once at a character boundary: the first `1 - validation_fraction` for
/// training, the rest for validation.
pub fn split_corpus(text: &str, validation_fraction: f64) -> (&str, &str) {
    let chars = text.chars().count();
    let train_chars = ((chars as f64) * (1.0 - validation_fraction)).round() as usize;
    let cut = text
        .char_indices()
        .nth(train_chars)
        .map_or(text.len(), |(i, _)| i);
    text.split_at(cut)
}

/// The share of a corpus kept, at its end, for validation.
pub const VALIDATION_FRACTION: f64 = 0.1;

/// A corpus split contiguously and encoded with a tokenizer fit on its training part only.
pub struct EncodedCorpus {
    pub tokenizer: TextTokenizer,
    pub train: Tokens,
    pub validation: Tokens,
}

impl EncodedCorpus {
    /// With the character tokenizer.
    pub fn new(text: &str) -> Self {
        Self::fit(text, TokenizerKind::Char, 0).expect("the character tokenizer always fits")
    }

    /// With a tokenizer of `kind` (`vocab_size` applies to BPE).
    pub fn fit(text: &str, kind: TokenizerKind, vocab_size: usize) -> Result<Self, DataError> {
        let (train_text, validation_text) = split_corpus(text, VALIDATION_FRACTION);
        let tokenizer = TextTokenizer::fit(kind, train_text, vocab_size)?;
        Ok(EncodedCorpus {
            train: tokenizer.encode(train_text).into(),
            validation: tokenizer.encode(validation_text).into(),
            tokenizer,
        })
    }
}

/// Characters seen in the training text, plus an unknown token (id 0) for any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharTokenizer {
    /// Sorted characters; token id = index + 1.
    chars: Vec<char>,
}

impl CharTokenizer {
    pub const UNKNOWN: u32 = 0;

    pub fn fit(text: &str) -> Self {
        let set: BTreeSet<char> = text.chars().collect();
        CharTokenizer {
            chars: set.into_iter().collect(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.chars.len() + 1
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.chars()
            .map(|c| {
                self.chars
                    .binary_search(&c)
                    .map_or(Self::UNKNOWN, |i| i as u32 + 1)
            })
            .collect()
    }

    /// The tokenizer in Hugging Face's `tokenizer.json` format: a word-level vocabulary over
    /// single characters (each character split off on its own), `<unk>` as id 0.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut vocab = serde_json::Map::new();
        vocab.insert("<unk>".into(), 0.into());
        for (i, c) in self.chars.iter().enumerate() {
            vocab.insert(c.to_string(), (i + 1).into());
        }
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": 0, "content": "<unk>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"},
                              "behavior": "Isolated", "invert": false},
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        })
    }

    /// Unknown and out-of-range ids decode to U+FFFD.
    pub fn decode(&self, tokens: &[u32]) -> String {
        tokens
            .iter()
            .map(|&t| match t {
                0 => char::REPLACEMENT_CHARACTER,
                t => self
                    .chars
                    .get(t as usize - 1)
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
            })
            .collect()
    }
}

/// Inputs and next-token targets for one step: `batch` windows of `block` tokens each,
/// flattened row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

/// The windows of step `step`: start positions drawn from a generator derived from the seed
/// and the step alone.
pub fn windows(tokens: &[u32], block: usize, batch: usize, seed: u64, step: u64) -> Windows {
    assert!(tokens.len() > block, "the text must be longer than a block");
    let positions = tokens.len() - block;
    let mut rng = SeededRng::derive(seed, 1_000_000 + step);
    let mut inputs = Vec::with_capacity(batch * block);
    let mut targets = Vec::with_capacity(batch * block);
    for _ in 0..batch {
        let start = rng.below(positions);
        inputs.extend_from_slice(&tokens[start..start + block]);
        targets.extend_from_slice(&tokens[start + 1..start + block + 1]);
    }
    Windows { inputs, targets }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_round_trip_and_unknown_ones_are_marked() {
        let tokenizer = CharTokenizer::fit("To be, or not to be — ünïcödé 🎭\n");
        let text = "be not 🎭 ü\n";
        assert_eq!(tokenizer.decode(&tokenizer.encode(text)), text);
        let unseen = tokenizer.encode("bQz");
        assert_eq!(unseen[1], CharTokenizer::UNKNOWN);
        assert_eq!(tokenizer.decode(&unseen), "b\u{fffd}\u{fffd}");
        assert_eq!(
            tokenizer.vocab_size(),
            "To be, or not to be — ünïcödé 🎭\n"
                .chars()
                .collect::<BTreeSet<_>>()
                .len()
                + 1
        );
    }

    #[test]
    fn the_split_is_contiguous_and_respects_character_boundaries() {
        let text = "ééééééééééabcdefghij";
        let (train, validation) = split_corpus(text, 0.25);
        assert_eq!(format!("{train}{validation}"), text);
        assert_eq!(validation.chars().count(), 5);
        assert_eq!(split_corpus("abc", 0.0), ("abc", ""));
    }

    #[test]
    fn windows_are_a_pure_function_of_seed_and_step() {
        let tokens: Vec<u32> = (0..1000).collect();
        let a = windows(&tokens, 8, 4, 7, 3);
        assert_eq!(
            a,
            windows(&tokens, 8, 4, 7, 3),
            "the same step repeats exactly"
        );
        assert_ne!(a, windows(&tokens, 8, 4, 7, 4), "the next step differs");
        assert_ne!(a, windows(&tokens, 8, 4, 8, 3), "another seed differs");
        for (x, y) in a.inputs.chunks(8).zip(a.targets.chunks(8)) {
            assert!(
                x.windows(2).all(|w| w[1] == w[0] + 1),
                "a window is contiguous"
            );
            assert_eq!(y[0], x[0] + 1, "targets are the next tokens");
        }
    }

    #[test]
    fn the_shakespeare_corpus_loads() {
        let text = builtin_corpus("shakespeare").unwrap();
        assert!(text.len() > 1_000_000);
        let (train, validation) = split_corpus(&text, 0.1);
        let tokenizer = CharTokenizer::fit(train);
        assert!(tokenizer.vocab_size() > 60 && tokenizer.vocab_size() < 120);
        assert!(validation.len() > 100_000);
    }
}
