//! `serve --worker-processes N`: training in child `trainyard worker` processes that the API
//! supervises. A job that aborts, overflows its stack or runs out of memory takes down its
//! worker, never the API: the supervisor records why the worker died on the attempt, puts its
//! job back in the queue at once (the restart policy decides whether it runs again) and starts a
//! new worker. Each worker gets an address-space ceiling so the kernel stops it, not the machine.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::state::SharedState;

/// Wait before restarting a worker that died, so a crash loop does not spin.
const RESTART_DELAY: Duration = Duration::from_millis(200);
/// Address space a worker may reserve beyond its job budget (code, thread stacks, allocator).
const ADDRESS_SPACE_OVERHEAD_MB: u64 = 4096;

/// What a worker's lost attempt says when the kernel killed it, most likely for memory; the
/// next attempt trains at half the batch (`worker::recovery::killed_for_memory`).
pub const KILLED_FOR_MEMORY: &str = "SIGKILL: out of memory?";

/// Why a process ended, in words a user can act on.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(9)) => {
            format!("killed by signal 9 ({KILLED_FOR_MEMORY} see the kernel log)")
        }
        (None, Some(6)) => "killed by signal 6 (SIGABRT: the process aborted)".to_string(),
        (None, Some(11)) => {
            "killed by signal 11 (SIGSEGV: a crash or a stack overflow)".to_string()
        }
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended for an unknown reason".to_string(),
    }
}

struct Slot {
    name: String,
    child: Child,
}

fn spawn(state: &SharedState, program: &PathBuf, name: &str) -> std::io::Result<Child> {
    let config = &state.config;
    let mut command = Command::new(program);
    command
        .arg("worker")
        .arg("--name")
        .arg(name)
        .arg("--slots")
        .arg("1")
        .arg("--data-dir")
        .arg(&config.data_dir)
        .arg("--artifacts")
        .arg(config.artifacts.to_string())
        .arg("--database-url")
        .arg(&config.database_url)
        .arg("--lease-seconds")
        .arg(config.lease.as_secs().max(1).to_string())
        .arg("--shutdown-grace-seconds")
        .arg(config.shutdown_grace.as_secs().to_string())
        .arg("--max-restarts")
        .arg(config.max_restarts.to_string())
        .arg("--keep-checkpoints")
        .arg(config.keep_checkpoints.to_string())
        .arg("--job-memory-mb")
        .arg(config.job_memory_mb.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    let ceiling = (config.job_memory_mb + ADDRESS_SPACE_OVERHEAD_MB) << 20;
    // SAFETY: only setrlimit and prctl, both async-signal-safe, run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: ceiling,
                rlim_max: ceiling,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            // A worker whose API dies (even by SIGKILL) stops too: it checkpoints and requeues.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command.spawn()
}

/// Starts `count` worker processes running `program` and keeps them running until shutdown;
/// then asks each to stop (SIGTERM: pause, checkpoint, requeue) and waits for them.
pub async fn supervise(
    state: SharedState,
    program: PathBuf,
    count: usize,
    mut stop: watch::Receiver<bool>,
) {
    let prefix = format!("child-{}", std::process::id());
    let mut slots: Vec<Slot> = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        match spawn(&state, &program, &name) {
            Ok(child) => slots.push(Slot { name, child }),
            Err(e) => {
                tracing::error!(error = %e, program = %program.display(), "cannot start a worker process")
            }
        }
    }
    while !slots.is_empty() {
        let exited = {
            let waits = slots
                .iter_mut()
                .enumerate()
                .map(|(i, s)| Box::pin(async move { (i, s.child.wait().await) }));
            let any = futures_util::future::select_all(waits);
            tokio::select! {
                ((i, status), _, _) = any => Some((i, status)),
                _ = stop.wait_for(|s| *s) => None,
            }
        };
        let Some((i, status)) = exited else { break };
        let reason = match status {
            Ok(status) => describe_exit(status),
            Err(e) => format!("could not be waited on: {e}"),
        };
        let name = slots[i].name.clone();
        tracing::warn!(worker = %name, %reason, "a worker process died; requeueing its job and starting another");
        let owner = format!("{name}-w0");
        let message = format!("worker process {name} {reason}");
        match state.store.requeue_dead_worker(&owner, &message).await {
            Ok(runs) => {
                for run in runs {
                    crate::events::publish_run_status(&state, &run).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not requeue a dead worker's job; its lease will expire")
            }
        }
        tokio::time::sleep(RESTART_DELAY).await;
        match spawn(&state, &program, &name) {
            Ok(child) => slots[i].child = child,
            Err(e) => {
                tracing::error!(error = %e, "cannot restart a worker process");
                slots.remove(i);
            }
        }
    }
    for slot in &slots {
        if let Some(pid) = slot.child.id() {
            // SAFETY: signalling a child process we started and still own.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for slot in &mut slots {
        let _ = tokio::time::timeout(state.config.shutdown_grace, slot.child.wait()).await;
    }
}
