//! Activation datasets: extraction jobs. A dataset row in `initializing` is a queued or
//! running extraction; a node with workers leases it, reads the source model over the corpus
//! one shard (a chunk of windows, every layer in one forward pass) at a time, writes each
//! shard to the artifact store under the dataset's folder and records its progress, which
//! also extends the lease. A node that dies leaves the lease to expire and another continues
//! at the first shard not recorded; a cancel or delete is noticed at the next shard.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use trainyard_data::DatasetInfo;
use trainyard_data::extracted::ExtractedFrom;
use trainyard_engine::sae::shards::{self, Shard, ShardedExtraction};
use trainyard_store::DatasetRow;

use crate::state::SharedState;

/// How long a node holds an extraction without recording progress.
pub const LEASE_MS: i64 = 30_000;
/// How often an idle node looks for an extraction to run.
const POLL: Duration = Duration::from_millis(250);

/// What to extract, as the user asked it (validated at create time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExtractionRequest {
    pub source_model: String,
    pub text_dataset: String,
    pub layers: Vec<usize>,
    pub site: String,
    pub n_tokens: usize,
}

/// An extraction's request and where it stands, kept on the dataset row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    pub request: ExtractionRequest,
    /// Shards read and stored, in order.
    pub shards_done: usize,
    pub shards_total: Option<usize>,
    pub tokens_done: usize,
    pub tokens_total: Option<usize>,
    pub error: Option<String>,
    /// The shards' size in all.
    #[serde(default)]
    pub bytes_stored: i64,
    /// The shard each continuation (after a stop or a lost node) started at.
    #[serde(default)]
    pub resumed_at: Vec<usize>,
}

impl Extraction {
    pub fn new(request: ExtractionRequest) -> Self {
        Extraction {
            request,
            shards_done: 0,
            shards_total: None,
            tokens_done: 0,
            tokens_total: None,
            error: None,
            bytes_stored: 0,
            resumed_at: Vec::new(),
        }
    }

    pub fn of(row: &DatasetRow) -> Option<Extraction> {
        serde_json::from_value(row.extraction.clone()?).ok()
    }

    fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an extraction serialises")
    }
}

/// Where shard `index` of a dataset stored under `folder` (ending in `/`) lives.
pub fn shard_key(folder: &str, index: usize) -> String {
    format!("{folder}shard-{index:06}")
}

/// Runs extractions on this node until shutdown: one at a time, the oldest first.
pub async fn run_extractions(state: SharedState, mut stop: watch::Receiver<bool>) {
    loop {
        if state.is_shutting_down() {
            return;
        }
        match state.store.claim_extraction(LEASE_MS).await {
            Ok(Some(row)) => run_one(&state, row).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "looking for an extraction failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn run_one(state: &SharedState, row: DatasetRow) {
    let Some(mut extraction) = Extraction::of(&row) else {
        tracing::warn!(dataset = %row.name, "an extraction without its request; failing it");
        let _ = state
            .store
            .finish_extraction(&row, "failed", &Value::Null)
            .await;
        return;
    };
    tracing::info!(dataset = %row.name, from = extraction.shards_done, "extracting activations");
    if extraction.shards_done > 0 {
        extraction.resumed_at.push(extraction.shards_done);
    }
    match extract(state, &row, &mut extraction).await {
        Ok(Some(info)) => {
            let bytes = extraction.bytes_stored;
            let row = DatasetRow { info, bytes, ..row };
            if let Err(e) = state
                .store
                .finish_extraction(&row, trainyard_store::DATASET_READY, &extraction.to_value())
                .await
            {
                tracing::warn!(dataset = %row.name, error = %e, "recording a finished extraction failed; it runs again");
            }
        }
        Ok(None) => {
            if state.is_shutting_down() {
                let _ = state
                    .store
                    .release_extraction(&row.project_id, &row.name)
                    .await;
            }
        }
        Err(error) => {
            tracing::warn!(dataset = %row.name, %error, "extraction failed");
            extraction.error = Some(error);
            let _ = state
                .store
                .finish_extraction(&row, "failed", &extraction.to_value())
                .await;
        }
    }
}

/// Reads the shards not yet stored; the dataset's description once all are, None when it
/// was cancelled, deleted or the node is stopping.
async fn extract(
    state: &SharedState,
    row: &DatasetRow,
    extraction: &mut Extraction,
) -> Result<Option<Value>, String> {
    let request = extraction.request.clone();
    let d_model = serde_json::from_value::<DatasetInfo>(row.info.clone())
        .map_err(|e| e.to_string())?
        .n_features;
    let model_file =
        crate::worker::dependency_file(state, &row.project_id, &request.source_model).await?;
    let corpus = crate::datasets::load(state, &row.project_id, &request.text_dataset).await?;
    let text: Arc<str> = match &corpus.text {
        Some(text) => text.clone(),
        None => trainyard_data::text::builtin_corpus(&request.text_dataset)
            .map_err(|e| format!("text_dataset: {e}"))?
            .into(),
    };
    let open_request = request.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Shard>(1);
    let (extractor, shards_total, tokens_total) = tokio::task::spawn_blocking(move || {
        let extractor = ShardedExtraction::open(
            &model_file,
            &text,
            &open_request.layers,
            &open_request.site,
            open_request.n_tokens,
        )?;
        let (train, held_out) = extractor.tokens();
        let total = extractor.shards();
        Ok::<_, String>((extractor, total, train + held_out))
    })
    .await
    .map_err(|e| e.to_string())??;
    extraction.shards_total = Some(shards_total);
    extraction.tokens_total = Some(tokens_total);
    // The reading thread runs a shard ahead of the writes; it stops when the channel closes.
    let start = extraction.shards_done;
    let reader = tokio::task::spawn_blocking(move || {
        for index in start..shards_total {
            if tx.blocking_send(extractor.read(index)).is_err() {
                return;
            }
        }
    });
    while let Some(shard) = rx.recv().await {
        let index = shard.index;
        let tokens = shard.tokens.len();
        let bytes = shards::encode(&shard, d_model);
        let size = bytes.len() as i64;
        let key = shard_key(&row.path, index);
        let artifacts = state.artifacts.clone();
        tokio::task::spawn_blocking(move || artifacts.put(&key, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("storing shard {index}: {e}"))?;
        extraction.shards_done = index + 1;
        extraction.tokens_done += tokens;
        extraction.bytes_stored += size;
        let going_on = state
            .store
            .extraction_progress(&row.project_id, &row.name, &extraction.to_value(), LEASE_MS)
            .await
            .map_err(|e| e.to_string())?;
        if !going_on || state.is_shutting_down() {
            drop(rx);
            let _ = reader.await;
            return Ok(None);
        }
    }
    reader.await.map_err(|e| e.to_string())?;
    let info = describe(state, row, extraction).await?;
    Ok(Some(info))
}

/// Reads every shard back (so the dataset is known to be whole) and describes the dataset
/// with each layer's statistics.
async fn describe(
    state: &SharedState,
    row: &DatasetRow,
    extraction: &Extraction,
) -> Result<Value, String> {
    let from = serde_json::from_value::<DatasetInfo>(row.info.clone())
        .map_err(|e| e.to_string())?
        .extracted_from
        .ok_or_else(|| format!("dataset '{}' is not an activation dataset", row.name))?;
    let total = extraction.shards_total.unwrap_or(0);
    let set = load_shards(state, &row.path, from, total).await?;
    let from = &set.from;
    let request = &extraction.request;
    let description = format!(
        "activations of model {} ({} of layer(s) {:?}) on '{}': {} tokens x {}",
        request.source_model,
        request.site,
        request.layers,
        request.text_dataset,
        from.n_tokens,
        from.d_model
    );
    let info = dataset_info(&row.name, description, set.from.clone());
    serde_json::to_value(info).map_err(|e| e.to_string())
}

/// An activation dataset's description: rows of `from.d_model` activations, no target.
pub fn dataset_info(name: &str, description: String, from: ExtractedFrom) -> DatasetInfo {
    DatasetInfo {
        name: name.to_string(),
        description,
        task: trainyard_core::Task::Unlabeled,
        n_rows: from.n_tokens,
        n_features: from.d_model,
        feature_names: Vec::new(),
        target_name: String::new(),
        classes: None,
        image_shape: None,
        test_rows: None,
        license: format!("derived from '{}'", from.text_dataset),
        extracted_from: Some(from),
    }
}

/// What an extracted dataset's description promises, before its shards are read.
pub fn provisional_from(
    request: &ExtractionRequest,
    d_model: usize,
    block_size: usize,
) -> ExtractedFrom {
    let (train, held_out) =
        trainyard_engine::sae::extract::planned_windows(request.n_tokens, block_size);
    ExtractedFrom {
        source_model: request.source_model.clone(),
        text_dataset: request.text_dataset.clone(),
        layers: request.layers.clone(),
        site: request.site.clone(),
        n_tokens: train * block_size,
        validation_tokens: held_out * block_size,
        d_model,
        block_size,
        statistics: Vec::new(),
    }
}

/// An extracted dataset's contents, from its shards.
pub async fn load_set(
    state: &SharedState,
    row: &DatasetRow,
) -> Result<trainyard_data::extracted::ActivationSet, String> {
    let info: DatasetInfo = serde_json::from_value(row.info.clone()).map_err(|e| e.to_string())?;
    let from = info
        .extracted_from
        .ok_or_else(|| format!("dataset '{}' is not an activation dataset", row.name))?;
    let total = Extraction::of(row)
        .and_then(|e| e.shards_total)
        .ok_or_else(|| format!("dataset '{}' has no shards yet", row.name))?;
    load_shards(state, &row.path, from, total).await
}

/// Shards `0..total` under `folder`, checked and assembled.
async fn load_shards(
    state: &SharedState,
    folder: &str,
    from: ExtractedFrom,
    total: usize,
) -> Result<trainyard_data::extracted::ActivationSet, String> {
    let artifacts = state.artifacts.clone();
    let folder = folder.to_string();
    tokio::task::spawn_blocking(move || {
        let shards = (0..total)
            .map(|i| {
                let bytes = artifacts
                    .get(&shard_key(&folder, i))
                    .map_err(|e| format!("activation shard {i}: {e}"))?;
                shards::decode(&bytes, &from).map_err(|e| format!("activation shard {i}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        shards::assemble(from, shards)
    })
    .await
    .map_err(|e| e.to_string())?
}
