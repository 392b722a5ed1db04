//! A job's activations: read back from the job cache when a resumed job, or another autoencoder
//! on the same source model, corpus, layers and site, extracted them already; else extracted
//! (with progress) and cached.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trainyard_core::TrainingEvent;

use super::extract::{Extracted, Source, extract};
use super::spec::SaeHyperparameters;
use super::train::LayerData;
use crate::container::{
    f32_le_view, read_f32s, read_sections, read_u32s, u32_bytes, write_sections,
};
use crate::family::{JobCache, Reporter};
use crate::{Control, TrainError};

const MAGIC: &[u8; 8] = b"TYSAEAC1";

#[derive(Serialize, Deserialize)]
struct Header {
    block: usize,
    layers: Vec<LayerHeader>,
}

#[derive(Serialize, Deserialize)]
struct LayerHeader {
    layer: usize,
    d_in: usize,
    scale: f32,
    train_rows: usize,
    validation_rows: usize,
}

/// Where a job's activations come from: the source model run over the corpus.
pub(super) struct ActivationRead<'a> {
    pub source: &'a Source,
    pub source_file: &'a [u8],
    pub corpus: &'a str,
    pub hp: &'a SaeHyperparameters,
}

impl ActivationRead<'_> {
    /// The activations an earlier job extracted with the same model, corpus and settings, or
    /// extracted now (with progress) and cached for the next job; None when stopped meanwhile.
    pub(super) fn cached_or_extracted(
        &self,
        cache: Option<&dyn JobCache>,
        control: &Control,
        reporter: &mut dyn Reporter,
    ) -> Result<Option<Extracted>, TrainError> {
        let hp = self.hp;
        let key = cache.map(|_| activation_key(self.source_file, self.corpus, hp));
        if let (Some(cache), Some(key)) = (cache, &key)
            && let Some(bytes) = cache.get(key)
        {
            match decode(&bytes) {
                Ok(extracted) => {
                    reporter.event(TrainingEvent::Note {
                        message: format!(
                            "activations of layer(s) {:?} read from the cache: an earlier job \
                             extracted them from the same model and corpus",
                            hp.layers
                        ),
                    });
                    return Ok(Some(extracted));
                }
                Err(e) => reporter.event(TrainingEvent::Note {
                    message: format!(
                        "cached activations could not be read ({e}); extracting again"
                    ),
                }),
            }
        }
        let mut last = Instant::now();
        let mut progress = |done: u64, total: u64| {
            if last.elapsed() >= crate::neural::PROGRESS_INTERVAL || done == total {
                last = Instant::now();
                reporter.event(TrainingEvent::Preparing {
                    stage: "extracting_activations".into(),
                    done,
                    total,
                });
            }
        };
        let extracted = extract(
            self.source,
            self.corpus,
            &hp.layers,
            hp.site,
            hp.n_tokens,
            hp.normalize_activations,
            control,
            &mut progress,
        )?;
        if let (Some(cache), Some(key), Some(extracted)) = (cache, &key, &extracted) {
            cache.put(key, &encode(extracted));
        }
        Ok(extracted)
    }
}

/// Everything an extraction depends on: the source model's file, the corpus, and the layers,
/// site, token count and normalisation asked for.
pub fn activation_key(source_file: &[u8], corpus: &str, hp: &SaeHyperparameters) -> String {
    let settings = serde_json::json!({
        "layers": hp.layers,
        "site": hp.site,
        "n_tokens": hp.n_tokens,
        "normalize": hp.normalize_activations,
    });
    let mut hash = Sha256::new();
    hash.update(b"sae-activations/1\0");
    hash.update(Sha256::digest(source_file));
    hash.update(Sha256::digest(corpus.as_bytes()));
    hash.update(settings.to_string().as_bytes());
    format!("sae-activations/{:x}", hash.finalize())
}

pub fn encode(extracted: &Extracted) -> Vec<u8> {
    let header = Header {
        block: extracted.block,
        layers: extracted
            .layers
            .iter()
            .map(|l| LayerHeader {
                layer: l.layer,
                d_in: l.d_in,
                scale: l.scale,
                train_rows: l.rows(),
                validation_rows: l.validation.len() / l.d_in,
            })
            .collect(),
    };
    let header = serde_json::to_vec(&header).expect("the header serialises");
    let windows = u32_bytes(&extracted.windows);
    let validation_windows = u32_bytes(&extracted.validation_windows);
    let tensors: Vec<_> = extracted
        .layers
        .iter()
        .flat_map(|l| [f32_le_view(&l.train), f32_le_view(&l.validation)])
        .collect();
    let mut sections: Vec<&[u8]> = vec![&header, &windows, &validation_windows];
    sections.extend(tensors.iter().map(|t| t.as_ref()));
    write_sections(MAGIC, &sections)
}

pub fn decode(bytes: &[u8]) -> Result<Extracted, String> {
    let sections = read_sections(MAGIC, "cached activations", bytes).map_err(|e| e.to_string())?;
    let header: Header = serde_json::from_slice(sections[0]).map_err(|e| e.to_string())?;
    if sections.len() != 3 + 2 * header.layers.len() {
        return Err("cached activations have two sections per layer".into());
    }
    let layers = header
        .layers
        .iter()
        .enumerate()
        .map(|(i, meta)| {
            let [train, validation] = [3 + 2 * i, 4 + 2 * i].map(|s| sections[s]);
            Ok(LayerData {
                layer: meta.layer,
                d_in: meta.d_in,
                scale: meta.scale,
                train: read_f32s(train, meta.train_rows * meta.d_in, "activations")?,
                validation: read_f32s(validation, meta.validation_rows * meta.d_in, "activations")?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Extracted {
        layers,
        windows: read_u32s(sections[1]),
        validation_windows: read_u32s(sections[2]),
        block: header.block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::spec;

    #[test]
    fn activations_round_trip_bit_exactly() {
        let layer = |layer: usize, rows: usize| LayerData {
            layer,
            d_in: 3,
            scale: 0.37,
            train: (0..rows * 3).map(|i| (i as f32).sin() * 1e-3).collect(),
            validation: (0..6).map(|i| -(i as f32) / 7.0).collect(),
        };
        let extracted = Extracted {
            layers: vec![layer(0, 5), layer(2, 5)],
            windows: (0..20).collect(),
            validation_windows: vec![7, 8, 9, 10],
            block: 4,
        };
        let back = decode(&encode(&extracted)).unwrap();
        assert_eq!(back.windows, extracted.windows);
        assert_eq!(back.validation_windows, extracted.validation_windows);
        assert_eq!(back.block, 4);
        for (a, b) in back.layers.iter().zip(&extracted.layers) {
            assert_eq!((a.layer, a.d_in, a.scale), (b.layer, b.d_in, b.scale));
            assert_eq!(a.train, b.train);
            assert_eq!(a.validation, b.validation);
        }
        let mut damaged = encode(&extracted);
        damaged[40] ^= 1;
        assert!(decode(&damaged).is_err());
    }

    #[test]
    fn the_key_changes_with_everything_extraction_depends_on() {
        let hp = spec::resolve(&serde_json::Map::new()).unwrap();
        let base = activation_key(b"model", "corpus", &hp);
        assert_eq!(base, activation_key(b"model", "corpus", &hp));
        let other_layers = SaeHyperparameters {
            layers: vec![3],
            ..hp.clone()
        };
        let fewer_tokens = SaeHyperparameters {
            n_tokens: 10,
            ..hp.clone()
        };
        for other in [
            activation_key(b"model2", "corpus", &hp),
            activation_key(b"model", "corpus2", &hp),
            activation_key(b"model", "corpus", &other_layers),
            activation_key(b"model", "corpus", &fewer_tokens),
        ] {
            assert_ne!(base, other);
        }
        // Training settings do not change the activations.
        let other_k = SaeHyperparameters { k: 7, ..hp.clone() };
        assert_eq!(base, activation_key(b"model", "corpus", &other_k));
    }
}
