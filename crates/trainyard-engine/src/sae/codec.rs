//! Checkpoint and model files: a JSON header plus raw little-endian `f32` sections for the
//! large tensors (JSON floats would be slow, large and not bit-exact).

use serde::{Deserialize, Serialize};

use super::model::Sae;
use super::optim::Adam;
use super::train::{Interval, LayerState, SaeCheckpoint, SaeEvaluation};
use crate::container::{f32_bytes, read_f32s, read_sections, write_sections};

const CHECKPOINT_MAGIC: &[u8; 8] = b"TYSAECK1";

/// An autoencoder's shape and small state; its four tensors are sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeShape {
    pub d_in: usize,
    pub d_sae: usize,
    pub threshold: f32,
}

pub fn sae_sections(sae: &Sae) -> (SaeShape, [Vec<u8>; 4]) {
    (
        SaeShape {
            d_in: sae.d_in,
            d_sae: sae.d_sae,
            threshold: sae.threshold,
        },
        [
            f32_bytes(&sae.w_enc),
            f32_bytes(&sae.b_enc),
            f32_bytes(&sae.w_dec),
            f32_bytes(&sae.b_dec),
        ],
    )
}

fn tensor_sizes(shape: &SaeShape) -> [usize; 4] {
    [
        shape.d_sae * shape.d_in,
        shape.d_sae,
        shape.d_sae * shape.d_in,
        shape.d_in,
    ]
}

pub fn read_sae(shape: &SaeShape, sections: &[&[u8]]) -> Result<Sae, String> {
    let [w_enc, b_enc, w_dec, b_dec] = read_four(shape, sections, "autoencoder")?;
    Ok(Sae {
        d_in: shape.d_in,
        d_sae: shape.d_sae,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold: shape.threshold,
    })
}

fn read_four(shape: &SaeShape, sections: &[&[u8]], what: &str) -> Result<[Vec<f32>; 4], String> {
    let sizes = tensor_sizes(shape);
    let read = |i: usize| read_f32s(sections[i], sizes[i], what);
    Ok([read(0)?, read(1)?, read(2)?, read(3)?])
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    layer: usize,
    shape: SaeShape,
    adam_t: u64,
    since_fired: Vec<u64>,
    l1: f64,
    interval: Interval,
}

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    step: u64,
    evaluations: Vec<SaeEvaluation>,
    layers: Vec<LayerMeta>,
}

/// Sections per layer: the four tensors, then Adam's first and second moments of each.
const LAYER_SECTIONS: usize = 12;

pub fn encode_checkpoint(checkpoint: &SaeCheckpoint) -> Vec<u8> {
    let mut sections: Vec<Vec<u8>> = vec![];
    let mut layers = vec![];
    for state in &checkpoint.layers {
        let (shape, tensors) = sae_sections(&state.sae);
        sections.extend(tensors);
        sections.extend(state.adam.m.iter().map(|m| f32_bytes(m)));
        sections.extend(state.adam.v.iter().map(|v| f32_bytes(v)));
        layers.push(LayerMeta {
            layer: state.layer,
            shape,
            adam_t: state.adam.t,
            since_fired: state.since_fired.clone(),
            l1: state.l1,
            interval: state.interval.clone(),
        });
    }
    let header = serde_json::to_vec(&CheckpointHeader {
        step: checkpoint.step,
        evaluations: checkpoint.evaluations.clone(),
        layers,
    })
    .expect("checkpoint header serialises");
    let mut all: Vec<&[u8]> = vec![&header];
    all.extend(sections.iter().map(Vec::as_slice));
    write_sections(CHECKPOINT_MAGIC, &all)
}

pub fn decode_checkpoint(bytes: &[u8]) -> Result<SaeCheckpoint, String> {
    let sections = read_sections(CHECKPOINT_MAGIC, "autoencoder checkpoint", bytes)
        .map_err(|e| e.to_string())?;
    let header: CheckpointHeader =
        serde_json::from_slice(sections[0]).map_err(|e| e.to_string())?;
    if sections.len() != 1 + LAYER_SECTIONS * header.layers.len() {
        return Err("an autoencoder checkpoint has 12 sections per layer".into());
    }
    let mut layers = vec![];
    for (i, meta) in header.layers.into_iter().enumerate() {
        let own = &sections[1 + i * LAYER_SECTIONS..][..LAYER_SECTIONS];
        let sae = read_sae(&meta.shape, &own[0..4])?;
        let m = read_four(&meta.shape, &own[4..8], "optimiser state")?;
        let v = read_four(&meta.shape, &own[8..12], "optimiser state")?;
        layers.push(LayerState {
            layer: meta.layer,
            sae,
            adam: Adam {
                t: meta.adam_t,
                m,
                v,
            },
            since_fired: meta.since_fired,
            l1: meta.l1,
            interval: meta.interval,
            scratch: Default::default(),
        });
    }
    Ok(SaeCheckpoint {
        step: header.step,
        evaluations: header.evaluations,
        layers,
    })
}
