//! The families a server knows, looked up by algorithm name.

use std::fmt;
use std::sync::Arc;

use trainyard_core::ValidationError;

use super::Family;

/// The registered families. Cheap to clone; shared by the API and the workers.
#[derive(Clone)]
pub struct Families {
    families: Vec<Arc<dyn Family>>,
}

impl Families {
    /// The families Trainyard ships: tabular networks and forests, anomaly detectors, and
    /// language models, and sparse autoencoders.
    pub fn builtin() -> Self {
        Families { families: vec![] }
            .with(Arc::new(super::tabular::Tabular))
            .with(Arc::new(crate::anomaly::family::AnomalyFamily))
            .with(Arc::new(crate::language::Language))
            .with(Arc::new(crate::sae::SparseAutoencoders))
    }

    /// Adds a family. Its algorithm names must not be taken by another family.
    pub fn with(mut self, family: Arc<dyn Family>) -> Self {
        for name in family.algorithms() {
            assert!(
                self.find(name).is_none(),
                "algorithm '{name}' of family '{}' is already registered",
                family.name()
            );
        }
        self.families.push(family);
        self
    }

    fn find(&self, algorithm: &str) -> Option<&Arc<dyn Family>> {
        self.families
            .iter()
            .find(|f| f.algorithms().contains(&algorithm))
    }

    /// The family that trains `algorithm`, or an error (field `algorithm`) listing them all.
    pub fn for_algorithm(&self, algorithm: &str) -> Result<&Arc<dyn Family>, ValidationError> {
        self.find(algorithm).ok_or_else(|| {
            ValidationError::new(
                "algorithm",
                format!(
                    "unknown algorithm '{algorithm}'; expected one of {}",
                    self.algorithms().join(", ")
                ),
            )
        })
    }

    /// Every algorithm name, in registration order.
    pub fn algorithms(&self) -> Vec<&'static str> {
        self.families.iter().flat_map(|f| f.algorithms()).collect()
    }
}

impl Default for Families {
    fn default() -> Self {
        Self::builtin()
    }
}

impl fmt::Debug for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.families.iter().map(|family| family.name()))
            .finish()
    }
}
