//! A corpus encoded once: the tokenizer fit on its training part and the tokens of both parts
//! are kept in the job cache, so the next language model on the same corpus and tokenizer
//! settings skips fitting and encoding (seconds for Shakespeare's BPE, minutes for a large
//! upload).

use sha2::{Digest, Sha256};
use trainyard_core::TrainingEvent;
use trainyard_data::text::{EncodedCorpus, VALIDATION_FRACTION};
use trainyard_data::tokenizer::{TextTokenizer, TokenizerKind};

use crate::TrainError;
use crate::container::{read_sections, read_u32s, u32_bytes, write_sections};
use crate::family::{JobCache, Reporter};

const MAGIC: &[u8; 8] = b"TYLMCOR1";

/// The corpus encoded with a tokenizer of `kind`: from the cache when an earlier job encoded
/// the same text the same way, else fit and encoded now (and cached).
pub(super) fn encoded_corpus(
    cache: Option<&dyn JobCache>,
    text: &str,
    kind: TokenizerKind,
    vocab_size: usize,
    reporter: &mut dyn Reporter,
) -> Result<EncodedCorpus, TrainError> {
    let key = cache.map(|_| corpus_key(text, kind, vocab_size));
    if let (Some(cache), Some(key)) = (cache, &key)
        && let Some(bytes) = cache.get(key)
    {
        match decode(&bytes) {
            Ok(corpus) => {
                reporter.event(TrainingEvent::Note {
                    message: "corpus tokens read from the cache: an earlier job encoded this \
                              corpus with the same tokenizer settings"
                        .into(),
                });
                return Ok(corpus);
            }
            Err(e) => reporter.event(TrainingEvent::Note {
                message: format!(
                    "the cached corpus tokens could not be read ({e}); encoding again"
                ),
            }),
        }
    }
    let stage = |done| TrainingEvent::Preparing {
        stage: "encoding".into(),
        done,
        total: 1,
    };
    reporter.event(stage(0));
    let corpus =
        EncodedCorpus::fit(text, kind, vocab_size).map_err(|e| TrainError::Fit(e.to_string()))?;
    reporter.event(stage(1));
    if let (Some(cache), Some(key)) = (cache, &key) {
        cache.put(key, &encode(&corpus));
    }
    Ok(corpus)
}

/// The text, the tokenizer settings and the split: everything the tokens depend on.
fn corpus_key(text: &str, kind: TokenizerKind, vocab_size: usize) -> String {
    let vocab = match kind {
        TokenizerKind::Char => 0,
        TokenizerKind::Bpe => vocab_size,
    };
    let mut hash = Sha256::new();
    hash.update(b"lm-corpus/1\0");
    hash.update(Sha256::digest(text.as_bytes()));
    hash.update(format!("{kind:?}/{vocab}/{VALIDATION_FRACTION}").as_bytes());
    format!("lm-corpus/{:x}", hash.finalize())
}

fn encode(corpus: &EncodedCorpus) -> Vec<u8> {
    let tokenizer = serde_json::to_vec(&corpus.tokenizer).expect("a tokenizer serialises");
    let train = u32_bytes(&corpus.train);
    let validation = u32_bytes(&corpus.validation);
    write_sections(MAGIC, &[&tokenizer, &train, &validation])
}

fn decode(bytes: &[u8]) -> Result<EncodedCorpus, String> {
    let sections = read_sections(MAGIC, "cached corpus", bytes).map_err(|e| e.to_string())?;
    let [tokenizer, train, validation] = sections[..] else {
        return Err("a cached corpus has three sections".into());
    };
    let tokenizer: TextTokenizer =
        serde_json::from_slice(tokenizer).map_err(|e| format!("its tokenizer: {e}"))?;
    Ok(EncodedCorpus {
        tokenizer,
        train: read_u32s(train),
        validation: read_u32s(validation),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::family::SavedCheckpoint;

    #[derive(Default)]
    struct MemoryCache(Mutex<HashMap<String, Vec<u8>>>);

    impl JobCache for MemoryCache {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.0.lock().unwrap().get(key).cloned()
        }
        fn put(&self, key: &str, bytes: &[u8]) {
            self.0.lock().unwrap().insert(key.into(), bytes.to_vec());
        }
    }

    #[derive(Default)]
    struct Notes(Vec<String>);

    impl Reporter for Notes {
        fn event(&mut self, event: TrainingEvent) {
            if let TrainingEvent::Note { message } = event {
                self.0.push(message);
            }
        }
        fn checkpoint(&mut self, _: &SavedCheckpoint) -> Result<u64, String> {
            Ok(0)
        }
    }

    #[test]
    fn a_second_encoding_of_the_same_corpus_comes_from_the_cache_unchanged() {
        let text = "To be, or not to be, that is the question:\n".repeat(200);
        let cache = MemoryCache::default();
        let mut notes = Notes::default();
        let fresh =
            encoded_corpus(Some(&cache), &text, TokenizerKind::Bpe, 300, &mut notes).unwrap();
        assert!(notes.0.is_empty(), "{:?}", notes.0);
        let cached =
            encoded_corpus(Some(&cache), &text, TokenizerKind::Bpe, 300, &mut notes).unwrap();
        assert_eq!(
            notes.0.len(),
            1,
            "the second says where its tokens came from"
        );
        assert_eq!(cached.train, fresh.train);
        assert_eq!(cached.validation, fresh.validation);
        assert_eq!(cached.tokenizer, fresh.tokenizer);

        // Other settings are other tokens.
        let chars =
            encoded_corpus(Some(&cache), &text, TokenizerKind::Char, 300, &mut notes).unwrap();
        assert_eq!(notes.0.len(), 1);
        assert_ne!(chars.train, fresh.train);
    }
}
