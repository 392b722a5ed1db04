//! Tokenizers for language models: the character tokenizer ([`crate::text::CharTokenizer`]) and
//! byte-level BPE trained on the training split with Hugging Face's `tokenizers`, kept in its
//! standard `tokenizer.json` form. A model file stores its tokenizer; both forms serialise so
//! that files written before BPE existed still load.

use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerBuilder,
};

use crate::DataError;
use crate::text::CharTokenizer;

/// Which tokenizer a model is trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// Each character of the training text is a token.
    #[default]
    Char,
    /// Byte-level BPE with a vocabulary of this size, trained on the training text.
    Bpe,
}

/// A fitted tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextTokenizer {
    Char(CharTokenizer),
    Bpe(BpeTokenizer),
}

impl TextTokenizer {
    /// Fits the tokenizer of `kind` on training text (`vocab_size` applies to BPE).
    pub fn fit(kind: TokenizerKind, text: &str, vocab_size: usize) -> Result<Self, DataError> {
        Ok(match kind {
            TokenizerKind::Char => TextTokenizer::Char(CharTokenizer::fit(text)),
            TokenizerKind::Bpe => TextTokenizer::Bpe(BpeTokenizer::train(text, vocab_size)?),
        })
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Char(t) => t.vocab_size(),
            TextTokenizer::Bpe(t) => t.vocab_size(),
        }
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            TextTokenizer::Char(t) => t.encode(text),
            TextTokenizer::Bpe(t) => t.encode(text),
        }
    }

    /// Byte-level tokens can end inside a character: its bytes decode to U+FFFD until the
    /// rest arrive.
    pub fn decode(&self, tokens: &[u32]) -> String {
        match self {
            TextTokenizer::Char(t) => t.decode(tokens),
            TextTokenizer::Bpe(t) => t.decode(tokens),
        }
    }

    /// Hugging Face's `tokenizer.json`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        match self {
            TextTokenizer::Char(t) => t.to_hf_json(),
            TextTokenizer::Bpe(t) => serde_json::from_str(&t.json).expect("a tokenizer's JSON"),
        }
    }

    pub fn kind(&self) -> TokenizerKind {
        match self {
            TextTokenizer::Char(_) => TokenizerKind::Char,
            TextTokenizer::Bpe(_) => TokenizerKind::Bpe,
        }
    }
}

/// The size of the pieces a long text is encoded in.
const CHUNK_BYTES: usize = 64 * 1024;

/// Byte-level BPE: every byte is in the vocabulary, so no text is unknown.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "SavedBpe", into = "SavedBpe")]
pub struct BpeTokenizer {
    inner: Arc<Tokenizer>,
    json: Arc<str>,
}

#[derive(Serialize, Deserialize)]
struct SavedBpe {
    bpe: String,
}

impl TryFrom<SavedBpe> for BpeTokenizer {
    type Error = String;

    fn try_from(saved: SavedBpe) -> Result<Self, String> {
        let inner = Tokenizer::from_str(&saved.bpe).map_err(|e| format!("tokenizer.json: {e}"))?;
        Ok(BpeTokenizer {
            inner: Arc::new(inner),
            json: saved.bpe.into(),
        })
    }
}

impl From<BpeTokenizer> for SavedBpe {
    fn from(tokenizer: BpeTokenizer) -> Self {
        SavedBpe {
            bpe: tokenizer.json.to_string(),
        }
    }
}

impl PartialEq for BpeTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BpeTokenizer({} tokens)", self.vocab_size())
    }
}

impl BpeTokenizer {
    /// Learns merges from `text` (line by line, newlines kept) up to `vocab_size` tokens,
    /// the 256 bytes included.
    pub fn train(text: &str, vocab_size: usize) -> Result<Self, DataError> {
        let fail =
            |e: tokenizers::Error| DataError::Text(format!("training the BPE tokenizer: {e}"));
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let byte_level = ByteLevel::new(false, true, true);
        let mut tokenizer = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(byte_level.into()))
        .with_decoder(Some(byte_level.into()))
        .build()
        .map_err(fail)?;
        tokenizer
            .train(&mut trainer, text.split_inclusive('\n'))
            .map_err(fail)?;
        let json = tokenizer.to_string(false).map_err(fail)?;
        BpeTokenizer::try_from(SavedBpe { bpe: json }).map_err(DataError::Text)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Long texts are encoded in pieces cut after a newline (in parallel, and without one
    /// huge intermediate encoding); pre-tokenization splits there anyway, but for a line that
    /// starts with spaces.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        if text.len() <= CHUNK_BYTES {
            return self
                .inner
                .encode_fast(text, false)
                .map(|encoding| encoding.get_ids().to_vec())
                .unwrap_or_default();
        }
        let mut chunks = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(CHUNK_BYTES);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Some(newline) = rest[..cut].rfind('\n').filter(|&i| i > 0) {
                cut = newline + 1;
            }
            let (chunk, tail) = rest.split_at(cut);
            chunks.push(chunk);
            rest = tail;
        }
        self.inner
            .encode_batch_fast(chunks, false)
            .map(|encodings| {
                encodings
                    .iter()
                    .flat_map(|e| e.get_ids().iter().copied())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn decode(&self, tokens: &[u32]) -> String {
        self.inner.decode(tokens, false).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpe_learns_merges_round_trips_and_serialises() {
        let text = "the cat sat on the mat; the cat ate the rat.\nthe end\n".repeat(50);
        let fitted = TextTokenizer::fit(TokenizerKind::Bpe, &text, 300).unwrap();
        assert!(fitted.vocab_size() > 256 && fitted.vocab_size() <= 300);
        let tokens = fitted.encode(&text);
        assert!(
            tokens.len() < text.len() / 2,
            "merges shorten the text: {}",
            tokens.len()
        );
        assert_eq!(fitted.decode(&tokens), text);
        assert_eq!(
            fitted.decode(&fitted.encode("zebra ünïcode")),
            "zebra ünïcode"
        );
        let saved = serde_json::to_string(&fitted).unwrap();
        let loaded: TextTokenizer = serde_json::from_str(&saved).unwrap();
        assert_eq!(loaded, fitted);
        assert_eq!(loaded.encode("the cat"), fitted.encode("the cat"));
        assert_eq!(fitted.to_hf_json()["model"]["type"], "BPE");
        // A long text is encoded in pieces, to the same tokens as in one piece.
        let long = "the cat sat on the mat; the cat ate the rat.\n".repeat(3000);
        let TextTokenizer::Bpe(bpe) = &fitted else {
            unreachable!()
        };
        let whole = bpe.inner.encode_fast(long.as_str(), false).unwrap();
        assert!(long.len() > 2 * CHUNK_BYTES);
        assert_eq!(fitted.encode(&long), whole.get_ids());
        // A character tokenizer saved before BPE existed still loads.
        let old: TextTokenizer = serde_json::from_str(r#"{"chars": ["a", "b"]}"#).unwrap();
        assert_eq!(old.kind(), TokenizerKind::Char);
        assert_eq!(old.encode("abc"), vec![1, 2, 0]);
    }
}
