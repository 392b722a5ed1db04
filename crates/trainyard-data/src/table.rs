use serde::{Deserialize, Serialize};
use trainyard_core::{DatasetShape, Task};

/// Rows of numeric features with one target each (none for an unlabeled dataset), stored
/// row-major for fast batching. Classification targets hold the class index as a float.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub n_features: usize,
}

impl Table {
    pub fn len(&self) -> usize {
        match self.n_features {
            0 => self.y.len(),
            d => self.x.len() / d,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.n_features..(i + 1) * self.n_features]
    }

    /// A new table holding the given rows, in the given order.
    pub fn select(&self, indices: &[usize]) -> Table {
        let mut x = Vec::with_capacity(indices.len() * self.n_features);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(self.row(i));
            if let Some(target) = self.y.get(i) {
                y.push(*target);
            }
        }
        Table {
            x,
            y,
            n_features: self.n_features,
        }
    }
}

/// What a user (and the API) needs to know about a dataset without loading its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub description: String,
    pub task: Task,
    pub n_rows: usize,
    pub n_features: usize,
    pub feature_names: Vec<String>,
    pub target_name: String,
    /// Class labels in index order, for classification.
    pub classes: Option<Vec<String>>,
    /// `[channels, height, width]` for image datasets.
    pub image_shape: Option<[usize; 3]>,
    /// Rows of a held-out test split shipped with the dataset (mnist's 10k).
    pub test_rows: Option<usize>,
    pub license: String,
    /// For an activation dataset extracted from a language model: what it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted_from: Option<crate::extracted::ExtractedFrom>,
}

impl DatasetInfo {
    pub fn shape(&self) -> DatasetShape {
        DatasetShape {
            task: self.task,
            n_features: self.n_features,
            n_classes: self.classes.as_ref().map(Vec::len),
            image_shape: self.image_shape,
            n_rows: self.n_rows,
        }
    }

    pub fn n_classes(&self) -> usize {
        self.classes.as_ref().map_or(0, Vec::len)
    }
}

/// A loaded dataset: its description, its rows and, when it ships one, its test split.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub info: DatasetInfo,
    pub table: Table,
    pub test: Option<Table>,
    /// A text corpus's text (`Task::Text`); its table is empty.
    pub text: Option<std::sync::Arc<str>>,
    /// Labeled texts (`Task::Text` with classes): one per row, the labels in `table.y`.
    pub texts: Option<std::sync::Arc<[String]>>,
    /// An extracted activation dataset's contents; its table is empty.
    pub activations: Option<std::sync::Arc<crate::extracted::ActivationSet>>,
}
