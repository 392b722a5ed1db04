//! Starts the real `trainyard` binary on a free port with its own data directory and talks to it
//! over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub struct Server {
    child: Option<Child>,
    /// The S3 server holding this server's artifacts, when the suite runs on S3.
    _s3: Option<S3Fs>,
    pub base: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    client: reqwest::Client,
}

pub struct Options {
    pub workers: usize,
    pub lease_seconds: u64,
    pub retry_backoff_ms: u64,
    pub max_upload_mb: usize,
    /// More `serve` flags.
    pub extra_args: Vec<String>,
    /// Where to listen; a free port when None.
    pub addr: Option<String>,
    /// More environment variables for the server.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            lease_seconds: 30,
            retry_backoff_ms: 1000,
            max_upload_mb: 100,
            extra_args: vec![],
            addr: None,
            env: vec![],
        }
    }
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut server = Self::start_in(&dir, options).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data directory (for restart tests).
    pub async fn start_in(dir: &Path, options: Options) -> Server {
        trainyard_server::install_tls_provider();
        let data_dir = dir.to_path_buf();
        let spawn_dir = data_dir.clone();
        let (child, base, s3) = tokio::task::spawn_blocking(move || {
            // A test that picks its own artifact store keeps it.
            let own_store = options.extra_args.iter().any(|a| a == "--artifacts");
            let s3 = if own_store {
                None
            } else {
                suite_s3(&spawn_dir)
            };
            let (child, base) = spawn(&spawn_dir, &options);
            (child, base, s3)
        })
        .await
        .unwrap();
        Server {
            child: Some(child),
            _s3: s3,
            base,
            data_dir,
            _temp: None,
            client: reqwest::Client::new(),
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub async fn stop(&mut self) -> Option<i32> {
        self.signal("-TERM").await
    }

    /// Sends a signal (`-INT`, `-TERM`) and waits for the process to exit.
    pub async fn signal(&mut self, signal: &str) -> Option<i32> {
        let mut child = self.child.take()?;
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap().code())
            .await
            .unwrap()
    }

    /// SIGKILL to the server and its worker processes (its process group): everything dies
    /// mid-whatever, as when the machine crashes.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Any request, with an API key and a project when given: (status, headers, JSON body).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        project: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(project) = project {
            req = req.header("x-trainyard-project", project);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        // Streams never end: only a JSON answer is read.
        let json = headers
            .get("content-type")
            .is_some_and(|t| t.to_str().unwrap_or("").starts_with("application/json"));
        let body = if json {
            r.json().await.unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        (status, headers, body)
    }

    /// Uploads a CSV with an API key; the upload must succeed.
    pub async fn post_bytes_with_key(&self, path: &str, csv: &str, key: &str) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(csv.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(
            status,
            201,
            "{path}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// A new API key from `trainyard keys create` against this server's database.
    pub fn create_key(&self, project: &str, role: &str) -> String {
        create_key(&self.data_dir, project, role)
    }

    /// POSTs raw bytes with a content type.
    pub async fn post_bytes(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .patch(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A server this test started some other way (in process), reached at `base`.
    pub fn at(base: String, data_dir: PathBuf) -> Server {
        trainyard_server::install_tls_provider();
        Server {
            child: None,
            _s3: None,
            base,
            data_dir,
            _temp: None,
            client: reqwest::Client::new(),
        }
    }

    /// Uploads a CSV under `name` with extra query parameters (`&label=...`); returns the body.
    pub async fn upload_csv(&self, name: &str, params: &str, csv: &str) -> (StatusCode, Value) {
        self.post_bytes(
            &format!("/api/datasets?name={name}{params}"),
            "text/csv",
            csv.as_bytes().to_vec(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> StatusCode {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn raw_get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Creates a model and returns its id, asserting a 201.
    pub async fn create_model(
        &self,
        dataset: &str,
        algorithm: &str,
        hyperparameters: Value,
    ) -> String {
        let (status, body) = self
            .post("/api/models", json!({"name": format!("{dataset}-{algorithm}"), "dataset": dataset, "algorithm": algorithm, "hyperparameters": hyperparameters}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn train(&self, model_id: &str) -> Value {
        let (status, body) = self
            .post(&format!("/api/models/{model_id}/train"), json!({}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body
    }

    /// A run with its attempts, by the id a train or status answer gives (`run["id"]`,
    /// `status["run_id"]`).
    pub async fn run(&self, run_id: &Value) -> Value {
        let id = run_id.as_str().expect("a run id");
        let (code, run) = self.get(&format!("/api/runs/{id}")).await;
        assert_eq!(code, StatusCode::OK, "{run}");
        run
    }

    /// Polls the status endpoint until the status is one of `wanted`.
    pub async fn wait_for(&self, model_id: &str, wanted: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.get(&format!("/api/models/{model_id}/status")).await;
            assert_eq!(code, StatusCode::OK, "{body}");
            if wanted.iter().any(|w| body["status"] == *w) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "model {model_id} never reached {wanted:?}; last status: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Server {
    /// Polls until the model's latest run has finished `epoch` epochs.
    pub async fn wait_for_epoch(&self, model_id: &str, epoch: i64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, s) = self.get(&format!("/api/models/{model_id}/status")).await;
            if s["progress"]["epoch"].as_i64().unwrap_or(0) >= epoch {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "model {model_id} never reached epoch {epoch}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
        }
    }
}

/// A `trainyard worker` process (one slot) on the server data directory `dir` and its database,
/// with `args` added, returned once it says it is ready.
pub fn worker_process(dir: &Path, args: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .args(["worker", "--slots", "1", "--data-dir"])
        .arg(dir)
        .args(args)
        .args(database_args(dir))
        .args(s3_args(dir))
        .envs(s3_env(dir))
        .env("TRAINYARD_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting a worker");
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("the worker exited before it was ready")
        .unwrap();
    assert!(line.contains("ready with 1 slots"), "{line}");
    child
}

/// A new API key from `trainyard keys create` on the database of the data directory `dir`.
pub fn create_key(dir: &Path, project: &str, role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .args(["keys", "--data-dir"])
        .arg(dir)
        .args(database_args(dir))
        .args(["create", "--project", project, "--role", role])
        .output()
        .expect("running trainyard keys create");
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("ty_"), "{token}");
    token
}

/// SIGKILL to the process group a server leads: the server and its worker processes.
fn kill_group(child: &Child) {
    let pid = i32::try_from(child.id()).expect("a pid fits in i32");
    assert!(pid > 1, "refusing to signal process group {pid}");
    // SAFETY: kill(2) with a negative pid signals that process group; the server leads its own.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

/// With `TRAINYARD_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432`), each data
/// directory gets a fresh PostgreSQL database of its own (kept across restarts in that
/// directory); without it, the server's embedded SQLite.
pub fn database_args(dir: &Path) -> Vec<String> {
    let Ok(base) = std::env::var("TRAINYARD_TEST_DATABASE_URL") else {
        return vec![];
    };
    let marker = dir.join(".test-database-url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return vec!["--database-url".into(), url];
    }
    let name = format!("ty_{}", uuid_like());
    let created = Command::new("psql")
        .arg(&base)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("running psql to create a test database");
    assert!(
        created.success(),
        "could not create database {name} at {base}"
    );
    let url = format!("{}/{name}", base.trim_end_matches('/'));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&marker, &url).unwrap();
    vec!["--database-url".into(), url]
}

/// The `s3s-fs` binary: `TRAINYARD_TEST_S3FS`, else on PATH, else cargo's bin folder.
pub fn s3fs_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TRAINYARD_TEST_S3FS") {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// A real S3-compatible server (s3s-fs) over a folder: each directory under `root` is a bucket
/// and each object a file, so tests can look at (and damage) objects as files.
pub struct S3Fs {
    child: Child,
    pub endpoint: String,
}

pub const S3_ACCESS_KEY: &str = "trainyard-test";
pub const S3_SECRET_KEY: &str = "trainyard-test-secret";

impl S3Fs {
    /// Starts s3s-fs over `root` and waits until it accepts connections.
    pub fn start(binary: &Path, root: &Path) -> S3Fs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(root).unwrap();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs never listened on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        S3Fs {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The environment a trainyard process needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        aws_env(&self.endpoint)
    }
}

impl Drop for S3Fs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `TRAINYARD_TEST_S3=1`, every server in the suite keeps its artifacts in S3: s3s-fs
/// serves the data directory with the bucket `artifacts`, so objects lie where the local store
/// would put its files and every test that inspects artifact files holds on S3 too.
fn suite_s3(dir: &Path) -> Option<S3Fs> {
    std::env::var("TRAINYARD_TEST_S3").ok()?;
    let binary = s3fs_binary().expect(
        "TRAINYARD_TEST_S3 is set but no s3s-fs was found: cargo install s3s-fs@0.14.1 --features binary",
    );
    std::fs::create_dir_all(dir.join("artifacts")).unwrap();
    let s3 = S3Fs::start(&binary, dir);
    std::fs::write(dir.join(".test-s3-endpoint"), &s3.endpoint).unwrap();
    Some(s3)
}

fn suite_s3_endpoint(dir: &Path) -> Option<String> {
    std::env::var("TRAINYARD_TEST_S3").ok()?;
    std::fs::read_to_string(dir.join(".test-s3-endpoint")).ok()
}

fn s3_args(dir: &Path) -> Vec<String> {
    match suite_s3_endpoint(dir) {
        Some(_) => vec!["--artifacts".into(), "s3://artifacts".into()],
        None => vec![],
    }
}

fn s3_env(dir: &Path) -> Vec<(String, String)> {
    suite_s3_endpoint(dir)
        .map(|endpoint| aws_env(&endpoint))
        .unwrap_or_default()
}

fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn spawn(dir: &Path, options: &Options) -> (Child, String) {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainyard"))
        // Its own process group, so `kill` can take the server and its workers down together.
        .process_group(0)
        .args(["serve", "--addr"])
        .arg(options.addr.as_deref().unwrap_or("127.0.0.1:0"))
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--workers",
            &options.workers.to_string(),
            "--lease-seconds",
            &options.lease_seconds.to_string(),
            "--retry-backoff-ms",
            &options.retry_backoff_ms.to_string(),
            "--max-upload-mb",
            &options.max_upload_mb.to_string(),
        ])
        .args(&options.extra_args)
        .args(database_args(dir))
        .args(s3_args(dir))
        .envs(s3_env(dir))
        .envs(options.env.iter().cloned())
        .env("TRAINYARD_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .env("TRAINYARD_FAILPOINT_PANIC_MODEL", "crash-test-dummy")
        .env("TRAINYARD_FAILPOINT_STALL_BEFORE_MODEL", "stale-writer")
        .env("TRAINYARD_FAILPOINT_ABORT_MODEL", "hard-crash")
        .env("TRAINYARD_FAILPOINT_KILL_MODEL", "memory-hog")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting trainyard");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(url) = line.strip_prefix("trainyard listening on ") {
            break url.trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

/// The model file a completed run published (named per attempt).
pub fn model_file(data_dir: &Path, run_id: &str) -> PathBuf {
    let dir = data_dir.join(format!("artifacts/runs/{run_id}"));
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tym"))
        .collect();
    assert_eq!(models.len(), 1, "one model file per run: {models:?}");
    models.pop().unwrap()
}

/// Every file under the server's artifact directory.
pub fn artifact_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out)
                } else {
                    out.push(path)
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("artifacts"), &mut out);
    out
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: i64,
    pub kind: String,
    pub data: Value,
}

/// Reads an SSE stream until the server ends it (or the timeout).
pub async fn read_sse(url: String, last_event_id: Option<i64>, timeout: Duration) -> Vec<SseEvent> {
    trainyard_server::install_tls_provider();
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    read_sse_from(request, timeout).await
}

/// The events of a stream read with an API key, for `timeout`.
pub async fn read_sse_as(url: String, key: &str, timeout: Duration) -> Vec<SseEvent> {
    trainyard_server::install_tls_provider();
    let request = reqwest::Client::new().get(url).bearer_auth(key);
    read_sse_from(request, timeout).await
}

pub async fn read_sse_from(request: reqwest::RequestBuilder, timeout: Duration) -> Vec<SseEvent> {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        let chunk = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            body.next(),
        )
        .await;
        let Ok(Some(chunk)) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if let Some(id) = id {
                events.push(SseEvent {
                    id,
                    kind,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
        }
    }
    events
}
