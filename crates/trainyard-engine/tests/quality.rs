//! The documented quality bars, with default hyperparameters, on full-size datasets (mnist with
//! a reduced budget so the suite stays fast; the full mnist bars are in the benchmark).

mod common;

use common::*;
use serde_json::json;
use trainyard_core::Algorithm;

#[test]
fn iris_mlp_reaches_093() {
    let (model, rec) = train_to_completion(request("iris", Algorithm::Mlp, defaults()));
    assert!(
        metric(&model, "accuracy") >= 0.93,
        "{:?}",
        model.header.metrics
    );
    assert_eq!(
        rec.epochs().len(),
        model.header.hyperparameters.epochs as usize
    );
}

#[test]
fn wine_quality_mlp_reaches_055() {
    let (model, _) = train_to_completion(request("wine_quality", Algorithm::Mlp, defaults()));
    assert!(
        metric(&model, "accuracy") >= 0.55,
        "{:?}",
        model.header.metrics
    );
}

#[test]
fn california_housing_mlp_r2_reaches_075() {
    let (model, _) = train_to_completion(request("california_housing", Algorithm::Mlp, defaults()));
    assert!(metric(&model, "r2") >= 0.75, "{:?}", model.header.metrics);
}

#[test]
fn california_housing_linear_regression_r2_reaches_058() {
    let (model, _) = train_to_completion(request(
        "california_housing",
        Algorithm::LinearRegression,
        defaults(),
    ));
    assert!(metric(&model, "r2") >= 0.58, "{:?}", model.header.metrics);
}

#[test]
fn synthetic_mlp_reaches_090() {
    let (model, _) = train_to_completion(request("synthetic", Algorithm::Mlp, defaults()));
    assert!(
        metric(&model, "accuracy") >= 0.90,
        "{:?}",
        model.header.metrics
    );
}

#[test]
fn iris_logistic_regression_and_random_forest_learn() {
    let (model, _) =
        train_to_completion(request("iris", Algorithm::LogisticRegression, defaults()));
    assert!(
        metric(&model, "accuracy") >= 0.9,
        "{:?}",
        model.header.metrics
    );
    let (forest, rec) = train_to_completion(request("iris", Algorithm::RandomForest, defaults()));
    assert!(
        metric(&forest, "accuracy") >= 0.9,
        "{:?}",
        forest.header.metrics
    );
    assert!(rec.epochs().is_empty(), "a forest has no epochs");
}

#[test]
fn california_random_forest_regresses() {
    let (forest, _) = train_to_completion(request(
        "california_housing",
        Algorithm::RandomForest,
        json!({"n_estimators": 20, "max_depth": 12}),
    ));
    assert!(metric(&forest, "r2") >= 0.7, "{:?}", forest.header.metrics);
}

#[test]
fn mnist_mlp_two_epoch_budget() {
    let (model, _) = train_to_completion(request("mnist", Algorithm::Mlp, json!({"epochs": 2})));
    assert!(
        metric(&model, "test_accuracy") >= 0.96,
        "{:?}",
        model.header.metrics
    );
}
