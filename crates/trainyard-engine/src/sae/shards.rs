//! An activation dataset's files: one shard per chunk of an [`ExtractionPlan`], written as
//! soon as it is read, so an interrupted extraction continues at its first missing shard and
//! the shards assemble to exactly what one uninterrupted pass reads.

use serde::{Deserialize, Serialize};
use trainyard_data::extracted::{ActivationSet, ExtractedFrom, layer_statistics};

use super::extract::{ExtractionPlan, Source, activations};
use crate::container::{
    f32_le_view, read_f32s, read_sections, read_u32s, u32_bytes, write_sections,
};
use crate::language::Site;

const MAGIC: &[u8; 8] = b"TYACTSH1";

/// One chunk's tokens and each layer's activations for them (raw, not normalised).
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub index: usize,
    pub held_out: bool,
    pub tokens: Vec<u32>,
    pub layers: Vec<Vec<f32>>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    index: usize,
    held_out: bool,
    layers: usize,
    d_model: usize,
}

/// Reads chunk `index` of `plan` through the source model: all `layers` in one pass.
pub fn read_shard(
    source: &Source,
    plan: &ExtractionPlan,
    index: usize,
    layers: &[usize],
    site: Site,
) -> Shard {
    let (held_out, tokens) = plan.chunk(index);
    Shard {
        index,
        held_out,
        tokens: tokens.to_vec(),
        layers: activations(source, tokens, layers, site),
    }
}

/// The shape of a `transformer_lm` model file an extraction reads: (layers, width, context).
pub fn source_shape(model_file: &[u8]) -> Result<(usize, usize, usize), crate::PredictError> {
    let config = crate::language::family::language_model_config(model_file)?;
    Ok((config.n_layer, config.n_embd, config.block_size))
}

/// An extraction ready to read its shards one by one.
pub struct ShardedExtraction {
    source: Source,
    plan: ExtractionPlan,
    layers: Vec<usize>,
    site: Site,
}

impl ShardedExtraction {
    /// Decodes the source model and cuts the corpus into the windows to read; a corpus too
    /// short for the model's context is an error that says so.
    pub fn open(
        model_file: &[u8],
        text: &str,
        layers: &[usize],
        site: &str,
        n_tokens: usize,
    ) -> Result<Self, String> {
        let source = Source::decode(model_file).map_err(|e| format!("source_model: {e}"))?;
        let plan = ExtractionPlan::new(&source, text, n_tokens).map_err(|e| e.to_string())?;
        Ok(ShardedExtraction {
            source,
            plan,
            layers: layers.to_vec(),
            site: Site::parse(site),
        })
    }

    pub fn shards(&self) -> usize {
        self.plan.chunks()
    }

    /// Training and held-out tokens the shards hold in all.
    pub fn tokens(&self) -> (usize, usize) {
        (self.plan.windows.len(), self.plan.validation_windows.len())
    }

    pub fn read(&self, index: usize) -> Shard {
        read_shard(&self.source, &self.plan, index, &self.layers, self.site)
    }
}

pub fn encode(shard: &Shard, d_model: usize) -> Vec<u8> {
    let header = serde_json::to_vec(&Header {
        index: shard.index,
        held_out: shard.held_out,
        layers: shard.layers.len(),
        d_model,
    })
    .expect("the header serialises");
    let tokens = u32_bytes(&shard.tokens);
    let values: Vec<_> = shard.layers.iter().map(|l| f32_le_view(l)).collect();
    let mut sections: Vec<&[u8]> = vec![&header, &tokens];
    sections.extend(values.iter().map(|v| v.as_ref()));
    write_sections(MAGIC, &sections)
}

/// A shard, checked against what its dataset says it holds.
pub fn decode(bytes: &[u8], from: &ExtractedFrom) -> Result<Shard, String> {
    let sections = read_sections(MAGIC, "activation shard", bytes).map_err(|e| e.to_string())?;
    let header: Header = serde_json::from_slice(sections[0]).map_err(|e| e.to_string())?;
    if header.layers != from.layers.len()
        || header.d_model != from.d_model
        || sections.len() != 2 + header.layers
    {
        return Err(format!(
            "shard {} holds {} layer(s) of width {}; the dataset has {} of width {}",
            header.index,
            header.layers,
            header.d_model,
            from.layers.len(),
            from.d_model
        ));
    }
    let tokens = read_u32s(sections[1]);
    let layers = sections[2..]
        .iter()
        .map(|s| read_f32s(s, tokens.len() * from.d_model, "activations"))
        .collect::<Result<_, _>>()?;
    Ok(Shard {
        index: header.index,
        held_out: header.held_out,
        tokens,
        layers,
    })
}

/// The dataset from all its shards, in order; a missing or misplaced one is an error.
pub fn assemble(from: ExtractedFrom, shards: Vec<Shard>) -> Result<ActivationSet, String> {
    let n = from.layers.len();
    let mut set = ActivationSet {
        train: vec![Vec::new(); n],
        validation: vec![Vec::new(); n],
        windows: Vec::new(),
        validation_windows: Vec::new(),
        from,
    };
    for (i, shard) in shards.into_iter().enumerate() {
        if shard.index != i {
            return Err(format!("shard {i} is missing"));
        }
        let (values, tokens) = if shard.held_out {
            (&mut set.validation, &mut set.validation_windows)
        } else {
            (&mut set.train, &mut set.windows)
        };
        tokens.extend(shard.tokens);
        for (into, layer) in values.iter_mut().zip(shard.layers) {
            into.extend(layer);
        }
    }
    let (train, held_out) = (set.windows.len(), set.validation_windows.len());
    if train < set.from.n_tokens || held_out != set.from.validation_tokens {
        return Err(format!(
            "the shards hold {train} training and {held_out} held-out tokens; the dataset \
             has {} and {}",
            set.from.n_tokens, set.from.validation_tokens
        ));
    }
    set.from.statistics = set
        .from
        .layers
        .iter()
        .zip(&set.train)
        .map(|(&layer, values)| layer_statistics(layer, values, set.from.d_model))
        .collect();
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> ExtractedFrom {
        ExtractedFrom {
            source_model: "m".into(),
            text_dataset: "t".into(),
            layers: vec![0, 2],
            site: "resid_post".into(),
            n_tokens: 4,
            validation_tokens: 2,
            d_model: 2,
            block_size: 2,
            statistics: Vec::new(),
        }
    }

    fn shard(index: usize, held_out: bool, tokens: Vec<u32>) -> Shard {
        let values = |k: f32| tokens.iter().flat_map(|&t| [t as f32 * k, -k]).collect();
        Shard {
            index,
            held_out,
            layers: vec![values(1.0), values(0.5)],
            tokens,
        }
    }

    #[test]
    fn shards_round_trip_and_assemble_in_order() {
        let shards = vec![
            shard(0, false, vec![1, 2]),
            shard(1, false, vec![3, 4]),
            shard(2, true, vec![5, 6]),
        ];
        let back: Vec<Shard> = shards
            .iter()
            .map(|s| decode(&encode(s, 2), &from()).unwrap())
            .collect();
        assert_eq!(back, shards);
        let set = assemble(from(), back).unwrap();
        assert_eq!(set.windows, vec![1, 2, 3, 4]);
        assert_eq!(set.validation_windows, vec![5, 6]);
        assert_eq!(
            set.train[0],
            vec![1.0, -1.0, 2.0, -1.0, 3.0, -1.0, 4.0, -1.0]
        );
        assert_eq!(set.validation[1], vec![2.5, -0.5, 3.0, -0.5]);
        assert_eq!(set.from.statistics.len(), 2);
        assert_eq!(set.from.statistics[0].mean, vec![2.5, -1.0]);
    }

    #[test]
    fn a_missing_or_damaged_shard_is_refused() {
        let gap = vec![shard(0, false, vec![1, 2]), shard(2, true, vec![5, 6])];
        assert!(
            assemble(from(), gap)
                .unwrap_err()
                .contains("shard 1 is missing")
        );
        let short = vec![shard(0, false, vec![1, 2]), shard(1, true, vec![5, 6])];
        assert!(assemble(from(), short).is_err());
        let mut bytes = encode(&shard(0, false, vec![1, 2]), 2);
        bytes[30] ^= 1;
        assert!(decode(&bytes, &from()).is_err());
        let narrow = ExtractedFrom {
            d_model: 3,
            ..from()
        };
        assert!(decode(&encode(&shard(0, false, vec![1, 2]), 2), &narrow).is_err());
    }
}
