//! `trainyard doctor`: checks the environment a server would run in (and, with `--server`, a
//! running server), one line per check with ok/warn/fail and what to do. Exits 1 when a check
//! fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;
use trainyard_server::artifacts::ArtifactLocation;
use trainyard_store::Store;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// The data directory `serve` would use.
    #[arg(long, env = "TRAINYARD_DATA_DIR", default_value = "./trainyard-data")]
    data_dir: PathBuf,
    /// Database URL; defaults to SQLite in the data directory.
    #[arg(long, env = "TRAINYARD_DATABASE_URL")]
    database_url: Option<String>,
    /// The artifact store `serve` would use: a local path or `s3://bucket/prefix`.
    #[arg(long, env = "TRAINYARD_ARTIFACTS", value_parser = ArtifactLocation::parse)]
    artifacts: Option<ArtifactLocation>,
    /// The job memory budget `serve` would use, in MB (default: half of the machine's memory).
    #[arg(long, env = "TRAINYARD_JOB_MEMORY_MB")]
    job_memory_mb: Option<u64>,
    /// Also check a running server (its /ready and version).
    #[arg(long)]
    server: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Serialize)]
struct Check {
    name: &'static str,
    level: Level,
    detail: String,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        level: Level::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn problem(name: &'static str, level: Level, detail: impl Into<String>, fix: &str) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
        fix: Some(fix.to_string()),
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut checks = vec![data_dir(&args.data_dir), disk_space(&args.data_dir)];
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("trainyard.db").display()));
    checks.push(runtime.block_on(database(&url)));
    let location = args
        .artifacts
        .clone()
        .unwrap_or_else(|| ArtifactLocation::Local(args.data_dir.join("artifacts")));
    checks.push(artifacts(&location));
    checks.push(cpu_features());
    checks.push(threads());
    checks.push(memory(args.job_memory_mb));
    if let Some(server) = &args.server {
        checks.extend(runtime.block_on(server_checks(server)));
    }
    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if args.output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": !failed, "checks": checks}))?
        );
    } else {
        for c in &checks {
            let level = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{level}  {:<16} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("      {:<16} -> {fix}", "");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn data_dir(dir: &Path) -> Check {
    const NAME: &str = "data dir";
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"probe"))
        .and_then(|_| std::fs::remove_file(&probe));
    match result {
        Ok(()) => ok(NAME, format!("{} is writable", dir.display())),
        Err(e) => problem(
            NAME,
            Level::Fail,
            format!("{} is not writable: {e}", dir.display()),
            "pass --data-dir (or TRAINYARD_DATA_DIR) pointing at a directory this user may write",
        ),
    }
}

fn disk_space(dir: &Path) -> Check {
    const NAME: &str = "disk space";
    let Some(free) = free_bytes(dir) else {
        return problem(
            NAME,
            Level::Warn,
            "could not read free space",
            "check free space by hand (df)",
        );
    };
    let gb = free as f64 / 1e9;
    let detail = format!("{gb:.1} GB free under {}", dir.display());
    if gb < 1.0 {
        problem(
            NAME,
            Level::Fail,
            detail,
            "free space: checkpoints and models need room",
        )
    } else if gb < 5.0 {
        problem(
            NAME,
            Level::Warn,
            detail,
            "long runs keep several checkpoints; consider more room or --keep-checkpoints 1",
        )
    } else {
        ok(NAME, detail)
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = dir.ancestors().find(|p| p.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

async fn database(url: &str) -> Check {
    const NAME: &str = "database";
    let shown = redacted(url);
    if let Some(path) = url.strip_prefix("sqlite://")
        && !Path::new(path).exists()
    {
        return ok(
            NAME,
            format!("{path} does not exist yet; `trainyard serve` creates it"),
        );
    }
    let store = match Store::open_existing(url).await {
        Ok(s) => s,
        Err(e) => {
            return problem(
                NAME,
                Level::Fail,
                format!("cannot open {shown}: {e}"),
                "check --database-url, the server's reachability and the file's permissions",
            );
        }
    };
    let result = store.schema_versions().await;
    store.close().await;
    match result {
        Ok((applied, latest)) if applied == latest => ok(
            NAME,
            format!("{shown} answers; schema at version {applied}"),
        ),
        Ok((applied, latest)) if applied < latest => problem(
            NAME,
            Level::Warn,
            format!("schema at version {applied}, this build knows {latest}"),
            "`trainyard serve` applies the pending migrations at start",
        ),
        Ok((applied, latest)) => problem(
            NAME,
            Level::Fail,
            format!("schema at version {applied} is newer than this build's {latest}"),
            "run the newer trainyard that migrated this database",
        ),
        Err(e) => problem(
            NAME,
            Level::Fail,
            format!("{shown} does not look like a Trainyard database: {e}"),
            "point --database-url at the server's database",
        ),
    }
}

fn artifacts(location: &ArtifactLocation) -> Check {
    const NAME: &str = "artifact store";
    let key = format!("doctor/{}.probe", std::process::id());
    let payload = b"trainyard doctor round trip";
    let result = location.open().and_then(|store| {
        store.put(&key, payload)?;
        let back = store.get(&key)?;
        store.delete_prefix("doctor")?;
        Ok(back)
    });
    match result {
        Ok(back) if back == payload => ok(
            NAME,
            format!("write, read and delete round trip in {location}"),
        ),
        Ok(_) => problem(
            NAME,
            Level::Fail,
            "read back different bytes than were written",
            "check the disk and filesystem under the data directory",
        ),
        Err(e) => problem(
            NAME,
            Level::Fail,
            format!("round trip in {location} failed: {e}"),
            "check permissions and free space (a folder), or the bucket, credentials and AWS_ENDPOINT_URL (S3)",
        ),
    }
}

fn cpu_features() -> Check {
    const NAME: &str = "cpu features";
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("flags"))
                .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        })
        .unwrap_or_default();
    let has = |f: &str| flags.iter().any(|x| x == f);
    let present: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    let detail = format!(
        "{} ({})",
        std::env::consts::ARCH,
        if present.is_empty() {
            "none of avx2, fma, avx512f, avx512_bf16, amx_bf16".to_string()
        } else {
            present.join(", ")
        }
    );
    if cfg!(target_arch = "x86_64") && !has("avx2") {
        problem(
            NAME,
            Level::Warn,
            detail,
            "without AVX2 the engine runs its scalar kernels: expect slow training",
        )
    } else {
        ok(NAME, detail)
    }
}

fn threads() -> Check {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rayon = std::env::var("RAYON_NUM_THREADS").ok();
    let detail = match &rayon {
        Some(n) => format!("{cores} cores available; RAYON_NUM_THREADS={n}"),
        None => format!("{cores} cores available; the engine uses all of them"),
    };
    if cores < 2 {
        problem(
            "threads",
            Level::Warn,
            detail,
            "one core trains slowly and serves slowly while it trains",
        )
    } else {
        ok("threads", detail)
    }
}

fn memory(job_memory_mb: Option<u64>) -> Check {
    const NAME: &str = "memory";
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb / 1024)
    };
    let budget = job_memory_mb.unwrap_or_else(trainyard_server::state::default_job_memory_mb);
    let (Some(total), Some(available)) = (field("MemTotal:"), field("MemAvailable:")) else {
        return problem(
            NAME,
            Level::Warn,
            format!("could not read /proc/meminfo; job budget {budget} MB"),
            "set --job-memory-mb to what one job may use",
        );
    };
    let detail =
        format!("{total} MB total, {available} MB available; job budget {budget} MB per job");
    if budget > total {
        problem(
            NAME,
            Level::Fail,
            detail,
            "the job budget exceeds the machine's memory: lower --job-memory-mb",
        )
    } else if available < 1024 {
        problem(
            NAME,
            Level::Warn,
            detail,
            "little memory is free: large datasets and models may not fit",
        )
    } else {
        ok(NAME, detail)
    }
}

async fn server_checks(base: &str) -> Vec<Check> {
    let base = base.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let ready = match client.get(format!("{base}/ready")).send().await {
        Ok(r) if r.status().is_success() => ok("server ready", format!("{base}/ready answers 200")),
        Ok(r) => problem(
            "server ready",
            Level::Fail,
            format!("{base}/ready answers {}", r.status()),
            "read the server's log: its database is not answering",
        ),
        Err(e) => problem(
            "server ready",
            Level::Fail,
            format!("cannot reach {base}: {e}"),
            "start it with `trainyard serve`, or pass the right --server",
        ),
    };
    let version = match client.get(format!("{base}/health")).send().await {
        Ok(r) => match r.json::<serde_json::Value>().await {
            Ok(v) => {
                let theirs = v["version"].as_str().unwrap_or("unknown").to_string();
                let ours = env!("CARGO_PKG_VERSION");
                if theirs == ours {
                    ok("server version", format!("{theirs}, same as this client"))
                } else {
                    problem(
                        "server version",
                        Level::Warn,
                        format!("server {theirs}, client {ours}"),
                        "use the same trainyard version on both sides",
                    )
                }
            }
            Err(e) => problem(
                "server version",
                Level::Warn,
                format!("unreadable /health: {e}"),
                "is this a Trainyard server?",
            ),
        },
        Err(_) => return vec![ready],
    };
    vec![ready, version]
}
