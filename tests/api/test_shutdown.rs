//! Issue 8, defect 6: open streams do not hold shutdown up, the whole shutdown fits its grace
//! period, and the interrupted runs resume after a restart.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::support::{Options, Server, read_sse};

#[tokio::test]
async fn test_shutdown_with_running_jobs_and_open_streams_is_prompt_and_clean() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        extra_args: vec!["--shutdown-grace-seconds".into(), "10".into()],
        ..Default::default()
    };
    let mut server = Server::start_in(dir.path(), options()).await;
    let hp = json!({"epochs": 6, "hidden_layers": [64]});
    let a = server.create_model("mnist", "mlp", hp.clone()).await;
    let b = server.create_model("mnist", "mlp", hp).await;
    server.train(&a).await;
    server.train(&b).await;
    server.wait_for_epoch(&a, 1, Duration::from_secs(120)).await;
    server.wait_for_epoch(&b, 1, Duration::from_secs(120)).await;

    let sse = tokio::spawn(read_sse(
        server.url(&format!("/api/models/{a}/events")),
        None,
        Duration::from_secs(60),
    ));
    let global = tokio::spawn(read_sse(
        server.url("/api/events"),
        None,
        Duration::from_secs(60),
    ));
    let ws_url = format!(
        "{}/api/models/{b}/ws",
        server.base.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    // The streams are open once they deliver something.
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))), "{first:?}");
    let ws = tokio::spawn(async move {
        let mut last = None;
        while let Some(Ok(message)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                last = Some(serde_json::from_str::<serde_json::Value>(&text).unwrap());
            }
        }
        last
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let code = server.stop().await;
    let took = started.elapsed();
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(11),
        "shutdown took {took:?} with a 10 s grace"
    );

    let sse = sse.await.unwrap();
    assert_eq!(sse.last().unwrap().kind, "shutdown", "{:?}", sse.last());
    let global = global.await.unwrap();
    assert_eq!(global.last().unwrap().kind, "shutdown");
    let last_ws = ws.await.unwrap().expect("websocket messages");
    assert_eq!(last_ws["type"], "shutdown", "{last_ws}");

    let restarted = Server::start_in(dir.path(), options()).await;
    for id in [&a, &b] {
        let done = restarted
            .wait_for(id, &["completed", "failed"], Duration::from_secs(300))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        let (_, runs) = restarted.get(&format!("/api/models/{id}/runs")).await;
        let run = runs["runs"][0]["id"].as_str().unwrap();
        let (_, run) = restarted.get(&format!("/api/runs/{run}")).await;
        assert!(
            run["attempts"].as_array().unwrap().len() >= 2,
            "resumed in a new attempt: {run}"
        );
    }
}
