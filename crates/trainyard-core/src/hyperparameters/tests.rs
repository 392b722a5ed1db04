use serde_json::json;

use super::*;

fn tabular(task: Task) -> DatasetShape {
    DatasetShape {
        task,
        n_features: 4,
        n_classes: Some(3),
        image_shape: None,
        n_rows: 150,
    }
}

fn resolve_err(algorithm: Algorithm, value: Value) -> ValidationError {
    let map = value.as_object().unwrap().clone();
    Hyperparameters::resolve(algorithm, &tabular(Task::Classification), &map).unwrap_err()
}

#[test]
fn defaults_fill_every_key_the_algorithm_accepts() {
    let hp = Hyperparameters::resolve(Algorithm::Mlp, &tabular(Task::Classification), &Map::new())
        .unwrap();
    let json = hp.to_json(Algorithm::Mlp);
    for key in Hyperparameters::allowed_keys(Algorithm::Mlp) {
        assert!(json.get(key).is_some(), "missing default for {key}");
    }
    assert!(
        json.get("n_estimators").is_none(),
        "forest keys do not apply to mlp"
    );
}

#[test]
fn user_values_override_defaults() {
    let map = json!({"epochs": 7, "learning_rate": 0.1, "optimizer": "sgd", "hidden_layers": [8]});
    let hp = Hyperparameters::resolve(
        Algorithm::Mlp,
        &tabular(Task::Classification),
        map.as_object().unwrap(),
    )
    .unwrap();
    assert_eq!(hp.epochs, 7);
    assert_eq!(hp.learning_rate, 0.1);
    assert_eq!(hp.optimizer, OptimizerKind::Sgd);
    assert_eq!(hp.hidden_layers, vec![8]);
}

#[test]
fn unknown_key_names_the_key_and_the_allowed_ones() {
    let err = resolve_err(Algorithm::Mlp, json!({"epochz": 3}));
    assert_eq!(err.field, "epochz");
    assert!(err.message.contains("allowed: epochs"), "{}", err.message);
}

#[test]
fn key_of_another_algorithm_is_rejected() {
    let err = resolve_err(Algorithm::RandomForest, json!({"learning_rate": 0.1}));
    assert_eq!(err.field, "learning_rate");
    assert!(err.message.contains("random_forest"));
}

#[test]
fn wrong_types_are_rejected() {
    let cases = [
        json!({"epochs": "ten"}),
        json!({"epochs": 2.5}),
        json!({"epochs": -1}),
        json!({"learning_rate": "fast"}),
        json!({"optimizer": 3}),
        json!({"hidden_layers": 64}),
        json!({"hidden_layers": [64, "x"]}),
        json!({"early_stopping": "yes"}),
    ];
    for case in cases {
        let key = case.as_object().unwrap().keys().next().unwrap().clone();
        let err = resolve_err(Algorithm::Mlp, case.clone());
        assert!(err.field.starts_with(&key), "{case}: field {}", err.field);
        assert!(
            err.message.starts_with("expected"),
            "{case}: {}",
            err.message
        );
    }
}

#[test]
fn out_of_range_values_name_the_range() {
    let cases = [
        (json!({"epochs": 0}), "epochs", "[1, 100000]"),
        (json!({"batch_size": 100000}), "batch_size", "[1, 65536]"),
        (
            json!({"learning_rate": 0.0}),
            "learning_rate",
            "[0.0000001, 10]",
        ),
        (
            json!({"learning_rate": 11}),
            "learning_rate",
            "[0.0000001, 10]",
        ),
        (
            json!({"validation_split": 0.9}),
            "validation_split",
            "[0.05, 0.5]",
        ),
        (json!({"dropout": 0.95}), "dropout", "[0, 0.9]"),
        (json!({"momentum": 1.5}), "momentum", "[0, 0.999]"),
        (json!({"weight_decay": -0.1}), "weight_decay", "[0, 1]"),
        (
            json!({"hidden_layers": [0]}),
            "hidden_layers[0]",
            "[1, 4096]",
        ),
        (
            json!({"hidden_layers": [1, 1, 1, 1, 1, 1, 1, 1, 1]}),
            "hidden_layers",
            "0 to 8",
        ),
    ];
    for (case, field, range) in cases {
        let err = resolve_err(Algorithm::Mlp, case.clone());
        assert_eq!(err.field, field, "{case}");
        assert!(err.message.contains(range), "{case}: {}", err.message);
    }
}

#[test]
fn choices_list_the_options() {
    let err = resolve_err(Algorithm::Mlp, json!({"optimizer": "rmsprop"}));
    assert_eq!(err.field, "optimizer");
    assert_eq!(
        err.message,
        "must be one of sgd, adam, adamw, got 'rmsprop'"
    );
    let err = resolve_err(Algorithm::Mlp, json!({"lr_schedule": "linear"}));
    assert!(err.message.contains("constant, cosine, step"));
    let err = resolve_err(Algorithm::Mlp, json!({"activation": "swish"}));
    assert_eq!(err.field, "activation");
    let err = resolve_err(Algorithm::Cnn, json!({"precision": "fp16"}));
    assert_eq!(err.field, "precision");
    assert_eq!(err.message, "must be one of fp32, bf16, got 'fp16'");
}

#[test]
fn networks_take_bf16_products_and_forests_do_not() {
    use crate::hyperparameters::Precision;
    let map = json!({"precision": "bf16"});
    let shape = tabular(Task::Classification);
    let hp = Hyperparameters::resolve(Algorithm::Mlp, &shape, map.as_object().unwrap()).unwrap();
    assert_eq!(hp.precision, Precision::Bf16);
    assert_eq!(hp.to_json(Algorithm::Mlp)["precision"], "bf16");
    let err = resolve_err(Algorithm::RandomForest, json!({"precision": "bf16"}));
    assert_eq!(err.field, "precision");
}

#[test]
fn early_stopping_is_checked_against_the_task() {
    let err = resolve_err(
        Algorithm::Mlp,
        json!({"early_stopping": {"monitor": "val_r2"}}),
    );
    assert_eq!(err.field, "early_stopping.monitor");
    let err = resolve_err(Algorithm::Mlp, json!({"early_stopping": {"patience": 0}}));
    assert_eq!(err.field, "early_stopping.patience");
    let err = resolve_err(Algorithm::Mlp, json!({"early_stopping": {"wait": 3}}));
    assert_eq!(err.field, "early_stopping.wait");

    let map = json!({"early_stopping": {"monitor": "val_accuracy", "patience": 3}});
    let hp = Hyperparameters::resolve(
        Algorithm::Mlp,
        &tabular(Task::Classification),
        map.as_object().unwrap(),
    )
    .unwrap();
    let es = hp.early_stopping.unwrap();
    assert!(es.maximize());
    assert_eq!(es.patience, 3);
}

#[test]
fn algorithm_must_fit_the_task() {
    let shape = tabular(Task::Regression);
    let err = Algorithm::LogisticRegression
        .check_fits("california_housing", &shape)
        .unwrap_err();
    assert_eq!(err.field, "algorithm");
    assert!(err.message.contains("classification"), "{}", err.message);
    assert!(
        Algorithm::LinearRegression
            .check_fits("x", &tabular(Task::Classification))
            .is_err()
    );
    assert!(
        Algorithm::Cnn
            .check_fits("iris", &tabular(Task::Classification))
            .is_err()
    );
    assert!(Algorithm::Mlp.check_fits("x", &shape).is_ok());
}

#[test]
fn unknown_algorithm_lists_the_known_ones() {
    let err = "svm".parse::<Algorithm>().unwrap_err();
    assert!(
        err.message
            .contains("linear_regression, logistic_regression, mlp, cnn, random_forest")
    );
}

#[test]
fn specs_saved_before_augmentation_existed_still_load() {
    let shape = DatasetShape {
        task: Task::Classification,
        n_features: 784,
        n_classes: Some(10),
        image_shape: Some([1, 28, 28]),
        n_rows: 60_000,
    };
    let hp = Hyperparameters::defaults(Algorithm::Cnn, &shape);
    let mut saved = serde_json::to_value(&hp).unwrap();
    for key in ["augment_shift", "augment_rotate", "augment_erase"] {
        saved.as_object_mut().unwrap().remove(key);
    }
    let loaded: Hyperparameters = serde_json::from_value(saved).unwrap();
    assert_eq!(loaded, hp);
}

#[test]
fn batch_size_auto_is_kept_and_shown_and_other_strings_are_refused() {
    let map = json!({"batch_size": "auto"});
    let hp = Hyperparameters::resolve(
        Algorithm::Mlp,
        &tabular(Task::Classification),
        map.as_object().unwrap(),
    )
    .unwrap();
    assert!(hp.batch_size_auto);
    assert_eq!(hp.to_json(Algorithm::Mlp)["batch_size"], "auto");

    let err = resolve_err(Algorithm::Mlp, json!({"batch_size": "large"}));
    assert_eq!(err.field, "batch_size");
    assert!(err.message.contains("\"auto\""), "{}", err.message);
    let fixed = Hyperparameters::resolve(
        Algorithm::Mlp,
        &tabular(Task::Classification),
        json!({"batch_size": 64}).as_object().unwrap(),
    )
    .unwrap();
    assert!(!fixed.batch_size_auto);
    assert_eq!(fixed.to_json(Algorithm::Mlp)["batch_size"], 64);
}
