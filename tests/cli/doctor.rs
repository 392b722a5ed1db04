//! `trainyard doctor`: one line per check, JSON for scripts, exit 1 when something fails.

use std::process::Command;

use serde_json::Value;

use crate::support::Server;

fn doctor(args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .arg("doctor")
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), report)
}

fn level<'a>(report: &'a Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))["level"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn doctor_checks_the_environment_and_a_running_server() {
    let server = Server::start().await;
    let data = server.data_dir.to_str().unwrap().to_string();
    let (code, report) = doctor(&["--data-dir", &data, "--server", &server.base]);
    assert_eq!(code, Some(0), "{report}");
    for name in [
        "data dir",
        "database",
        "artifact store",
        "server ready",
        "server version",
    ] {
        assert_eq!(level(&report, name), "ok", "{report}");
    }
    for name in ["disk space", "cpu features", "threads", "memory"] {
        assert_ne!(level(&report, name), "fail", "{report}");
    }
}

#[test]
fn doctor_fails_naming_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let (code, report) = doctor(&[
        "--data-dir",
        file.to_str().unwrap(),
        "--server",
        "http://127.0.0.1:9",
        "--job-memory-mb",
        "100000000",
    ]);
    assert_eq!(code, Some(1), "{report}");
    for name in ["data dir", "server ready", "memory"] {
        assert_eq!(level(&report, name), "fail", "{report}");
    }
    let fixes: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["level"] == "fail")
        .map(|c| c["fix"].as_str().unwrap())
        .collect();
    assert!(fixes.iter().all(|f| !f.is_empty()), "{fixes:?}");
}
