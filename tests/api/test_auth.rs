//! Authentication over real HTTP: a loopback server is zero-setup until a key exists; then
//! every bad key (missing, malformed, foreign format, wrong secret, revoked) is a 401 that
//! changes nothing; failed attempts and request rates are limited with 429 and Retry-After.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Options, Server};

async fn model_count(server: &Server, key: &str) -> u64 {
    let (code, _, body) = server
        .send(Method::GET, "/api/models", Some(key), None, None)
        .await;
    assert_eq!(code, 200, "{body}");
    body["total"].as_u64().unwrap()
}

#[tokio::test]
async fn a_loopback_server_needs_no_key_until_one_exists() {
    let server = Server::start().await;
    let (code, _, _) = server
        .send(Method::GET, "/api/models", None, None, None)
        .await;
    assert_eq!(code, 200, "zero setup on loopback");

    let key = server.create_key("default", "admin");
    // Keys made on the command line are noticed within a second or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, headers, body) = loop {
        let answer = server
            .send(Method::GET, "/api/models", None, None, None)
            .await;
        if answer.0 != 200 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keys create"),
        "the refusal says how to get a key: {body}"
    );
    assert_eq!(model_count(&server, &key).await, 0);
    let (code, _, _) = server.send(Method::GET, "/health", None, None, None).await;
    assert_eq!(code, 200, "probes stay public");
}

#[tokio::test]
async fn every_bad_key_is_a_401_that_changes_nothing() {
    let server = Server::start().await;
    let admin = server.create_key("default", "admin");
    let (code, _, created) = server
        .send(
            Method::POST,
            "/api/keys",
            Some(&admin),
            None,
            Some(json!({"name": "to revoke", "role": "editor"})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let revoked = created["token"].as_str().unwrap().to_string();
    let revoked_id = created["id"].as_str().unwrap();
    let (code, _, _) = server
        .send(
            Method::DELETE,
            &format!("/api/keys/{revoked_id}"),
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_eq!(code, 204);
    // The admin key with its last secret digit changed: same id, wrong secret.
    let mut wrong_secret = admin.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == '0' { '1' } else { '0' });

    let create = json!({"name": "m", "dataset": "iris", "algorithm": "mlp"});
    for (what, key) in [
        ("malformed", "not a key"),
        ("another server's format", "sk-proj-0123456789abcdef"),
        (
            "unknown id",
            "ty_000000000000_0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("wrong secret", wrong_secret.as_str()),
        ("revoked", revoked.as_str()),
    ] {
        let (code, headers, body) = server
            .send(
                Method::POST,
                "/api/models",
                Some(key),
                None,
                Some(create.clone()),
            )
            .await;
        assert_eq!(code, 401, "{what}: {body}");
        assert!(headers.contains_key("www-authenticate"), "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    }
    let (code, _, _) = server
        .send(Method::POST, "/api/models", None, None, Some(create))
        .await;
    assert_eq!(code, 401, "no key at all");
    assert_eq!(model_count(&server, &admin).await, 0, "nothing was created");
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address() {
    let server = Server::start_with(Options {
        extra_args: ["--auth-failures-per-minute", "3"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    })
    .await;
    let key = server.create_key("default", "viewer");
    let guess = "ty_000000000000_1111111111111111111111111111111111111111111111111111111111111111";
    for _ in 0..3 {
        let (code, _, _) = server
            .send(Method::GET, "/api/models", Some(guess), None, None)
            .await;
        assert_eq!(code, 401);
    }
    let (code, headers, body) = server
        .send(Method::GET, "/api/models", Some(guess), None, None)
        .await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Guessing is refused before it is checked, even a right guess from this address.
    let (code, _, _) = server
        .send(Method::GET, "/api/models", Some(&key), None, None)
        .await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_then_recovers() {
    let server = Server::start_with(Options {
        extra_args: ["--rate-limit-per-minute", "60"].map(String::from).to_vec(),
        ..Options::default()
    })
    .await;
    let key = server.create_key("default", "viewer");
    let other = server.create_key("default", "viewer");
    let mut limited = None;
    for _ in 0..100 {
        let (code, headers, _) = server
            .send(Method::GET, "/api/models", Some(&key), None, None)
            .await;
        if code == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(headers);
            break;
        }
        assert_eq!(code, 200);
    }
    let headers = limited.expect("60 a minute allows a burst of 60, not 100");
    assert!(headers.contains_key("retry-after"));
    let (code, _, _) = server
        .send(Method::GET, "/api/models", Some(&other), None, None)
        .await;
    assert_eq!(code, 200, "another key has its own budget");
    // One token a second refills the bucket.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, _) = server
            .send(Method::GET, "/api/models", Some(&key), None, None)
            .await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the key never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_key_holds_a_bounded_number_of_open_streams() {
    let server = Server::start_with(Options {
        extra_args: ["--max-streams-per-key", "2"].map(String::from).to_vec(),
        ..Options::default()
    })
    .await;
    let key = server.create_key("default", "viewer");
    let other = server.create_key("default", "viewer");
    let open = |key: String| {
        let url = server.url("/api/events");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    let first = open(key.clone()).await;
    let second = open(key.clone()).await;
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    let third = open(key.clone()).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        open(other.clone()).await.status(),
        200,
        "another key has its own slots"
    );
    drop(first);
    // The slot frees when the server notices the closed connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = open(key.clone()).await;
        if again.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
}
