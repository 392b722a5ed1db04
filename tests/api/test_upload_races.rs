//! Issue 8, defect 5: uploads keyed by everything that shapes their parse, and an atomic name
//! claim when two uploads race for one name.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::{Server, artifact_files};

/// Features, an integer class and a continuous value: the same bytes read as classification
/// (target `cls`) or regression (target `val`).
fn table_csv(rows: usize) -> String {
    let mut csv = String::from("x1,x2,cls,val\n");
    for i in 0..rows {
        let x1 = (i as f64 * 0.37).sin();
        let x2 = (i as f64 * 0.11).cos();
        let cls = usize::from(x1 + x2 > 0.0);
        csv.push_str(&format!("{x1:.4},{x2:.4},{cls},{:.4}\n", 3.0 * x1 - x2));
    }
    csv
}

#[tokio::test]
async fn test_same_bytes_with_another_target_train_on_their_own_target() {
    let server = Server::start().await;
    let csv = table_csv(240).into_bytes();
    for (name, query) in [
        ("by-class", "target=cls&task=classification"),
        ("by-value", "target=val&task=regression"),
    ] {
        let (code, body) = server
            .post_bytes(
                &format!("/api/datasets?name={name}&{query}"),
                "text/csv",
                csv.clone(),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    for (dataset, metric, absent) in [
        ("by-class", "accuracy", "r2"),
        ("by-value", "r2", "accuracy"),
    ] {
        let id = server
            .create_model(
                dataset,
                "random_forest",
                serde_json::json!({"n_estimators": 5}),
            )
            .await;
        server.train(&id).await;
        let done = server
            .wait_for(&id, &["completed", "failed"], Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        let metrics = &done["metrics"];
        assert!(metrics.get(metric).is_some(), "{dataset}: {metrics}");
        assert!(
            metrics.get(absent).is_none(),
            "{dataset} trained on the other target: {metrics}"
        );
    }
}

#[tokio::test]
async fn test_racing_uploads_of_one_name_leave_exactly_the_winners_file() {
    let server = Server::start().await;
    for round in 0..5 {
        let name = format!("race-{round}");
        let (a, b) = (table_csv(200).into_bytes(), table_csv(300).into_bytes());
        let path = format!("/api/datasets?name={name}&target=cls");
        let (ra, rb) = tokio::join!(
            server.post_bytes(&path, "text/csv", a.clone()),
            server.post_bytes(&path, "text/csv", b.clone())
        );
        let mut codes = [ra.0.as_u16(), rb.0.as_u16()];
        codes.sort();
        assert_eq!(codes, [201, 409], "{ra:?} {rb:?}");
        let winner = if ra.0 == 201 { &a } else { &b };
        let (_, row) = server.get(&format!("/api/datasets/{name}")).await;
        let sha = hex::encode(Sha256::digest(winner));
        assert_eq!(row["sha256"], sha.as_str(), "{row}");
        let files: Vec<_> = artifact_files(&server.data_dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&format!("datasets/{name}-")))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let stored = std::fs::read(&files[0]).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&stored)),
            sha,
            "the winner's file was overwritten"
        );
    }
}
