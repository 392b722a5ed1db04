//! A corpus encoded once: the tokenizer fit on its training part and the tokens of both parts
//! are kept in the job cache, so the next language model on the same corpus and tokenizer
//! settings skips fitting and encoding (seconds for Shakespeare's BPE, minutes for a large
//! upload). The tokens are kept as raw little-endian files beside a small header that holds
//! the tokenizer and each file's length and sha256; where the cache lies on local disk the
//! files are mapped rather than read, so a run holds no copy of its corpus's tokens in its own
//! memory (the kernel pages them in as windows touch them).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trainyard_core::TrainingEvent;
use trainyard_data::text::{EncodedCorpus, VALIDATION_FRACTION};
use trainyard_data::tokenizer::{TextTokenizer, TokenizerKind};
use trainyard_data::tokens::Tokens;

use crate::TrainError;
use crate::container::{read_sections, write_sections};
use crate::family::{JobCache, Reporter};

const MAGIC: &[u8; 8] = b"TYLMCOR2";

/// One part's token file as the header records it.
#[derive(Debug, Serialize, Deserialize)]
struct Part {
    tokens: usize,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Parts {
    train: Part,
    validation: Part,
}

/// The corpus encoded with a tokenizer of `kind`: from the cache when an earlier job encoded
/// the same text the same way, else fit and encoded now (and cached).
pub(super) fn encoded_corpus(
    cache: Option<&dyn JobCache>,
    text: &str,
    kind: TokenizerKind,
    vocab_size: usize,
    reporter: &mut dyn Reporter,
) -> Result<EncodedCorpus, TrainError> {
    // Hashing the text is work only a cache needs.
    let key = cache.map(|_| corpus_key(text, kind, vocab_size));
    if let (Some(cache), Some(key)) = (cache, &key) {
        match cached(cache, key) {
            Ok(Some(corpus)) => {
                reporter.event(TrainingEvent::Note {
                    message: "corpus tokens read from the cache: an earlier job encoded this \
                              corpus with the same tokenizer settings"
                        .into(),
                });
                return Ok(corpus);
            }
            Ok(None) => {}
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
    let mut corpus =
        EncodedCorpus::fit(text, kind, vocab_size).map_err(|e| TrainError::Fit(e.to_string()))?;
    reporter.event(stage(1));
    if let (Some(cache), Some(key)) = (cache, &key) {
        store(cache, key, &corpus);
        // Train from the files just written (whole, renamed into place, under a key derived
        // from their content): the encoded copy in memory goes.
        if let (Some(train), Some(validation)) = (
            mapped(cache, key, "train"),
            mapped(cache, key, "validation"),
        ) && train.len() == corpus.train.len()
            && validation.len() == corpus.validation.len()
        {
            (corpus.train, corpus.validation) = (train, validation);
        }
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
    hash.update(b"lm-corpus/2\0");
    hash.update(Sha256::digest(text.as_bytes()));
    hash.update(format!("{kind:?}/{vocab}/{VALIDATION_FRACTION}").as_bytes());
    format!("lm-corpus/{:x}", hash.finalize())
}

fn part_key(key: &str, part: &str) -> String {
    format!("{key}.{part}")
}

fn part_of(tokens: &Tokens) -> Part {
    Part {
        tokens: tokens.len(),
        sha256: format!("{:x}", Sha256::digest(tokens.le_bytes())),
    }
}

/// The token files first, the header last: a header names files that were written.
fn store(cache: &dyn JobCache, key: &str, corpus: &EncodedCorpus) {
    cache.put(&part_key(key, "train"), &corpus.train.le_bytes());
    cache.put(&part_key(key, "validation"), &corpus.validation.le_bytes());
    let tokenizer = serde_json::to_vec(&corpus.tokenizer).expect("a tokenizer serialises");
    let parts = Parts {
        train: part_of(&corpus.train),
        validation: part_of(&corpus.validation),
    };
    let parts = serde_json::to_vec(&parts).expect("parts serialise");
    cache.put(key, &write_sections(MAGIC, &[&tokenizer, &parts]));
}

fn mapped(cache: &dyn JobCache, key: &str, part: &str) -> Option<Tokens> {
    Tokens::map(&cache.path(&part_key(key, part))?).ok()
}

/// The cached corpus, None when the cache has no header for it; an error when the header or
/// a token file is missing or does not match what the header records.
fn cached(cache: &dyn JobCache, key: &str) -> Result<Option<EncodedCorpus>, String> {
    let Some(header) = cache.get(key) else {
        return Ok(None);
    };
    let sections = read_sections(MAGIC, "cached corpus", &header).map_err(|e| e.to_string())?;
    let [tokenizer, parts] = sections[..] else {
        return Err("a cached corpus header has two sections".into());
    };
    let tokenizer: TextTokenizer =
        serde_json::from_slice(tokenizer).map_err(|e| format!("its tokenizer: {e}"))?;
    let parts: Parts = serde_json::from_slice(parts).map_err(|e| format!("its parts: {e}"))?;
    Ok(Some(EncodedCorpus {
        tokenizer,
        train: cached_part(cache, key, "train", &parts.train)?,
        validation: cached_part(cache, key, "validation", &parts.validation)?,
    }))
}

/// A part's tokens, mapped where the cache has a local file, else read; checked against the
/// header either way.
fn cached_part(cache: &dyn JobCache, key: &str, name: &str, part: &Part) -> Result<Tokens, String> {
    let tokens = match mapped(cache, key, name) {
        Some(tokens) => tokens,
        None => {
            let bytes = cache
                .get(&part_key(key, name))
                .ok_or_else(|| format!("its {name} tokens are missing"))?;
            Tokens::from_le_bytes(&bytes)
        }
    };
    let found = part_of(&tokens);
    if found.tokens != part.tokens || found.sha256 != part.sha256 {
        return Err(format!(
            "its {name} tokens ({} of them) do not match the {} its header records",
            found.tokens, part.tokens
        ));
    }
    Ok(tokens)
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

    /// Entries as files in a folder, written whole and renamed into place as the artifact
    /// store writes them.
    struct DiskCache(std::path::PathBuf);

    impl DiskCache {
        fn file(&self, key: &str) -> std::path::PathBuf {
            self.0.join(key.replace('/', "_"))
        }
    }

    impl JobCache for DiskCache {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            std::fs::read(self.file(key)).ok()
        }
        fn put(&self, key: &str, bytes: &[u8]) {
            let temporary = self.0.join("writing");
            std::fs::write(&temporary, bytes).unwrap();
            std::fs::rename(&temporary, self.file(key)).unwrap();
        }
        fn path(&self, key: &str) -> Option<std::path::PathBuf> {
            Some(self.file(key)).filter(|p| p.is_file())
        }
    }

    #[test]
    fn tokens_cached_on_disk_are_mapped_and_damaged_ones_are_encoded_again() {
        let text = "Now is the winter of our discontent\n".repeat(100);
        let expected = EncodedCorpus::new(&text);
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache(dir.path().into());
        let mut notes = Notes::default();
        let fresh =
            encoded_corpus(Some(&cache), &text, TokenizerKind::Char, 0, &mut notes).unwrap();
        assert!(notes.0.is_empty(), "{:?}", notes.0);
        assert!(
            fresh.train.is_mapped() && fresh.validation.is_mapped(),
            "the run trains from the files it wrote, not a copy in memory"
        );
        assert_eq!(fresh.train, expected.train);
        assert_eq!(fresh.validation, expected.validation);

        let cached =
            encoded_corpus(Some(&cache), &text, TokenizerKind::Char, 0, &mut notes).unwrap();
        assert_eq!(notes.0.len(), 1, "{:?}", notes.0);
        assert!(cached.train.is_mapped() && cached.validation.is_mapped());
        assert_eq!(cached.train, expected.train);
        assert_eq!(cached.tokenizer, expected.tokenizer);

        // Other tokens of the same length in the training file: the header's digest tells.
        let key = corpus_key(&text, TokenizerKind::Char, 0);
        let mut damaged = expected.train.to_vec();
        damaged.swap(0, 1);
        cache.put(&part_key(&key, "train"), &Tokens::from(damaged).le_bytes());
        let again =
            encoded_corpus(Some(&cache), &text, TokenizerKind::Char, 0, &mut notes).unwrap();
        assert!(
            notes.0[1].contains("do not match") && notes.0[1].contains("encoding again"),
            "{:?}",
            notes.0
        );
        assert_eq!(again.train, expected.train);

        // A token file removed (by garbage collection, say): encoded again, not an error.
        std::fs::remove_file(cache.file(&part_key(&key, "validation"))).unwrap();
        let rebuilt =
            encoded_corpus(Some(&cache), &text, TokenizerKind::Char, 0, &mut notes).unwrap();
        assert!(notes.0[2].contains("missing"), "{:?}", notes.0);
        assert_eq!(rebuilt.validation, expected.validation);
    }
}
