//! Streaming detection over `GET /api/models/{id}/stream`: answers in order with sequence
//! numbers, errors for bad messages on an open socket, and a half-space-trees session that
//! continues, learned state and all, after the server restarts.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Options, Server};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server, model: &str, session: Option<&str>) -> (Socket, Value) {
    let mut url = server
        .url(&format!("/api/models/{model}/stream"))
        .replacen("http", "ws", 1);
    if let Some(session) = session {
        url.push_str(&format!("?session={session}"));
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next(&mut socket).await;
    assert_eq!(hello["type"], "session", "{hello}");
    (socket, hello)
}

async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("the server answers within 30 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Closes and waits for the server's close, which it sends after saving the session.
async fn close(mut socket: Socket) {
    socket.close(None).await.unwrap();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(30), socket.next()).await
    {
        if matches!(message, Message::Close(_)) {
            break;
        }
    }
}

async fn send(socket: &mut Socket, text: String) -> Value {
    socket.send(Message::Text(text.into())).await.unwrap();
    next(socket).await
}

/// Rows of shuttle-like readings, a different batch per `k`.
fn batch(k: usize) -> Vec<Vec<f64>> {
    (0..40)
        .map(|i| {
            let v = (k * 40 + i) as f64;
            vec![
                40.0 + v % 20.0,
                0.0,
                80.0 + v % 9.0,
                0.0,
                30.0,
                0.0,
                40.0,
                50.0,
                10.0 + v % 3.0,
            ]
        })
        .collect()
}

fn scores(answer: &Value) -> Vec<f64> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_learning_session_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), Options::default()).await;
    let id = server
        .create_model("shuttle", "half_space_trees", json!({"window_size": 50}))
        .await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(120))
        .await;

    // One session straight through: the reference answers.
    let (mut straight, hello) = connect(&server, &id, None).await;
    assert_eq!(
        (hello["seq"].as_i64(), hello["learning"].as_bool()),
        (Some(0), Some(true))
    );
    let mut reference = vec![];
    for k in 0..3 {
        let answer = send(&mut straight, json!({"rows": batch(k)}).to_string()).await;
        assert_eq!(answer["type"], "scores", "{answer}");
        assert_eq!(answer["seq"], k as i64 * 40, "answers come in order");
        reference.push(scores(&answer));
    }
    close(straight).await;

    // Another session: two batches, a bad message, a restart, then the third batch.
    let (mut socket, hello) = connect(&server, &id, None).await;
    let session = hello["session"].as_str().unwrap().to_string();
    for (k, expected) in reference.iter().enumerate().take(2) {
        let answer = send(&mut socket, json!({"rows": batch(k)}).to_string()).await;
        assert_eq!(&scores(&answer), expected);
    }
    for bad in [
        "not json",
        r#"{"rows": [[1, 2]]}"#,
        r#"{"rows": [[1,2,3,4,5,6,7,8,1e999]]}"#,
        r#"{"nope": 1}"#,
    ] {
        let answer = send(&mut socket, bad.to_string()).await;
        assert_eq!(answer["type"], "error", "{bad}: {answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    close(socket).await;
    let (socket, hello) = connect(&server, &id, Some(&session)).await;
    assert_eq!(
        hello["seq"], 80,
        "a reconnect continues at the saved position: {hello}"
    );
    close(socket).await;

    assert_eq!(server.stop().await, Some(0));
    let server = Server::start_in(dir.path(), Options::default()).await;
    let (mut socket, hello) = connect(&server, &id, Some(&session)).await;
    assert_eq!(hello["seq"], 80, "{hello}");
    let answer = send(&mut socket, json!({"rows": batch(2)}).to_string()).await;
    assert_eq!(answer["seq"], 80);
    assert_eq!(
        scores(&answer),
        reference[2],
        "the restored session learned as before"
    );

    let url = server
        .url(&format!("/api/models/{id}/stream?session=nope"))
        .replacen("http", "ws", 1);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!(
            "an unknown session must be a 404, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test]
async fn a_batch_detector_streams_stateless_scores_matching_predict() {
    let server = Server::start().await;
    let id = server.create_model("shuttle", "ecod", json!({})).await;
    server.train(&id).await;
    server
        .wait_for(&id, &["completed"], Duration::from_secs(120))
        .await;
    let (mut socket, hello) = connect(&server, &id, None).await;
    assert_eq!(hello["learning"], false);
    let answer = send(&mut socket, json!({"rows": batch(0)}).to_string()).await;
    let (_, predicted) = server
        .post(
            &format!("/api/models/{id}/predict"),
            json!({"inputs": batch(0)}),
        )
        .await;
    assert_eq!(answer["results"], predicted["predictions"]);
}
