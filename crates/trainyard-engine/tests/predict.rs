mod common;

use common::*;
use serde_json::json;
use trainyard_core::Algorithm;
use trainyard_engine::{PredictError, Prediction, TrainedModel};

#[test]
fn classifier_predicts_classes_with_probabilities_after_a_round_trip() {
    let (model, _) = train_to_completion(request("iris", Algorithm::Mlp, defaults()));
    let restored = TrainedModel::from_bytes(&model.to_bytes()).unwrap();
    let predictor = restored.predictor().unwrap();
    // Raw, unscaled measurements: the stored scaler is applied.
    let out = predictor
        .predict(&[vec![5.1, 3.5, 1.4, 0.2], vec![6.7, 3.0, 5.2, 2.3]])
        .unwrap();
    match (&out[0], &out[1]) {
        (
            Prediction::Class {
                label: a,
                probabilities: pa,
                ..
            },
            Prediction::Class { label: b, .. },
        ) => {
            assert_eq!(a, "0");
            assert_eq!(b, "2");
            assert!((pa.iter().sum::<f64>() - 1.0).abs() < 1e-4);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn regressor_predicts_on_the_original_scale() {
    let (model, _) = train_to_completion(request(
        "california_housing",
        Algorithm::LinearRegression,
        json!({"epochs": 3}),
    ));
    let predictor = model.predictor().unwrap();
    let out = predictor
        .predict(&[vec![8.3252, 41.0, 6.98, 1.02, 322.0, 2.56, 37.88, -122.23]])
        .unwrap();
    let Prediction::Value { value } = out[0] else {
        panic!()
    };
    assert!(
        (1.0..8.0).contains(&value),
        "median value in 100k USD, got {value}"
    );
}

#[test]
fn wrong_feature_count_names_expected_and_given() {
    let (model, _) = train_to_completion(request(
        "iris",
        Algorithm::LogisticRegression,
        json!({"epochs": 2}),
    ));
    let err = model
        .predictor()
        .unwrap()
        .predict(&[vec![1.0, 2.0]])
        .unwrap_err();
    assert!(
        matches!(
            err,
            PredictError::FeatureCount {
                expected: 4,
                given: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sepal_length"), "{err}");
}

#[test]
fn forest_round_trips_and_predicts() {
    let (model, _) = train_to_completion(request(
        "iris",
        Algorithm::RandomForest,
        json!({"n_estimators": 10}),
    ));
    let restored = TrainedModel::from_bytes(&model.to_bytes()).unwrap();
    let out = restored
        .predictor()
        .unwrap()
        .predict(&[vec![5.1, 3.5, 1.4, 0.2]])
        .unwrap();
    assert!(matches!(&out[0], Prediction::Class { label, .. } if label == "0"));
}

#[test]
fn weights_export_as_safetensors() {
    let (model, _) = train_to_completion(request("iris", Algorithm::Mlp, json!({"epochs": 1})));
    let bytes = model.export_safetensors().unwrap();
    // safetensors: u64 header length, then a JSON header naming the tensors.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.contains("dense.0.weight"), "{header}");
}

#[test]
fn corrupt_model_artifact_is_a_clear_error() {
    let (model, _) = train_to_completion(request(
        "iris",
        Algorithm::LogisticRegression,
        json!({"epochs": 1}),
    ));
    let mut bytes = model.to_bytes();
    bytes.truncate(bytes.len() - 10);
    assert!(
        TrainedModel::from_bytes(&bytes)
            .unwrap_err()
            .to_string()
            .contains("corrupt")
    );
}
