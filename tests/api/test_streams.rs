//! Live events over SSE and WebSocket: replay then live with no gap or duplicate at the join,
//! reconnecting from a sequence number, many subscribers, and a stalled one that slows nothing.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{Server, SseEvent, read_sse};

fn assert_gapless(events: &[SseEvent], first: i64) {
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let expected: Vec<i64> = (first..first + ids.len() as i64).collect();
    assert_eq!(
        ids, expected,
        "sequence numbers are consecutive, no gap, no duplicate"
    );
}

async fn start_long_run(server: &Server) -> String {
    let id = server
        .create_model("california_housing", "mlp", json!({"epochs": 25}))
        .await;
    server.train(&id).await;
    id
}

#[tokio::test]
async fn replay_then_live_joins_without_gaps_or_duplicates() {
    let server = Server::start().await;
    let id = start_long_run(&server).await;
    let url = server.url(&format!("/api/models/{id}/events"));
    let early = tokio::spawn(read_sse(url.clone(), None, Duration::from_secs(120)));
    server
        .wait_for(&id, &["training"], Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Joins while the worker is writing: its replay and the live tail must meet exactly.
    let late = read_sse(url.clone(), None, Duration::from_secs(120)).await;
    let early = early.await.unwrap();

    assert_gapless(&early, 1);
    assert_gapless(&late, 1);
    assert_eq!(early.len(), late.len());
    let last = late.last().unwrap();
    assert_eq!(last.kind, "status");
    assert_eq!(
        last.data["data"]["status"], "completed",
        "the stream ends after the terminal status"
    );
    let kinds: std::collections::HashSet<&str> = late.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["status", "attempt", "progress", "epoch", "checkpoint"] {
        assert!(kinds.contains(kind), "has {kind} events: {kinds:?}");
    }
    let epochs: Vec<i64> = late
        .iter()
        .filter(|e| e.kind == "epoch")
        .map(|e| e.data["data"]["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=25).collect::<Vec<_>>());
}

#[tokio::test]
async fn reconnecting_resumes_after_the_last_sequence_number() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 10}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(60))
        .await;
    let url = server.url(&format!("/api/models/{id}/events"));
    let all = read_sse(url.clone(), None, Duration::from_secs(10)).await;
    assert!(all.len() > 10);
    // A finished run's progress events may have been compacted away: replay is every stored
    // event after the position, in order.
    let ids = |events: &[SseEvent]| events.iter().map(|e| e.id).collect::<Vec<_>>();
    let after = |n: i64| {
        all.iter()
            .map(|e| e.id)
            .filter(|id| *id > n)
            .collect::<Vec<_>>()
    };
    let from_header = read_sse(url.clone(), Some(5), Duration::from_secs(10)).await;
    assert_eq!(ids(&from_header), after(5));
    let from_query = read_sse(format!("{url}?after=7"), None, Duration::from_secs(10)).await;
    assert_eq!(ids(&from_query), after(7));
    let (code, err) = server
        .get(&format!("/api/models/{id}/events?after=x"))
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(server.get("/api/models/nope/events").await.0, 404);
}

#[tokio::test]
async fn fifty_concurrent_subscribers_see_the_same_events() {
    let server = Server::start().await;
    let id = start_long_run(&server).await;
    let url = server.url(&format!("/api/models/{id}/events"));
    let readers: Vec<_> = (0..50)
        .map(|_| tokio::spawn(read_sse(url.clone(), None, Duration::from_secs(180))))
        .collect();
    let mut streams = Vec::new();
    for r in readers {
        streams.push(r.await.unwrap());
    }
    let reference: Vec<i64> = streams[0].iter().map(|e| e.id).collect();
    assert_gapless(&streams[0], 1);
    assert_eq!(
        streams[0].last().unwrap().data["data"]["status"],
        "completed"
    );
    for s in &streams {
        assert_eq!(s.iter().map(|e| e.id).collect::<Vec<_>>(), reference);
    }
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_slow_the_run() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start().await;
    let id = start_long_run(&server).await;
    // A client that asks for the stream and never reads a byte.
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            format!("GET /api/models/{id}/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let events = read_sse(
        server.url(&format!("/api/models/{id}/events")),
        None,
        Duration::from_secs(120),
    )
    .await;
    assert_gapless(&events, 1);
    assert_eq!(events.last().unwrap().data["data"]["status"], "completed");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the run finished in {:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[tokio::test]
async fn websocket_carries_the_same_events() {
    let server = Server::start().await;
    let id = server
        .create_model("iris", "mlp", json!({"epochs": 5}))
        .await;
    server.train(&id).await;
    let url = format!(
        "{}/api/models/{id}/ws",
        server.base.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut seqs = Vec::new();
    let mut last = Value::Null;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(60), socket.next()).await
    {
        match message.unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                seqs.push(event["seq"].as_i64().unwrap());
                last = event;
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(last["type"], "status");
    assert_eq!(last["data"]["status"], "completed");
}

#[tokio::test]
async fn the_global_stream_follows_every_model() {
    let server = Server::start().await;
    let reader = tokio::spawn(read_sse(
        server.url("/api/events"),
        None,
        Duration::from_secs(8),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = server
        .create_model("iris", "mlp", json!({"epochs": 3}))
        .await;
    let b = server
        .create_model("wine_quality", "mlp", json!({"epochs": 3}))
        .await;
    server.train(&a).await;
    server.train(&b).await;
    let events = reader.await.unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "global ids increase: {ids:?}"
    );
    let models: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e.data["model_id"].as_str().unwrap())
        .collect();
    assert!(
        models.contains(a.as_str()) && models.contains(b.as_str()),
        "{models:?}"
    );
}
