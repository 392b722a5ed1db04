//! How much memory a training job really held: the peak resident set of the process while the
//! job ran, beside the estimate it was admitted with, so users see estimate against reality.
//!
//! Linux keeps a process's peak resident set (`VmHWM`) and lets the process reset it
//! (`/proc/self/clear_refs`), so the peak read at the end is the job's own. The figure is only
//! the job's when it ran alone in its process (a worker process runs one job at a time; an
//! in-process server may run several), so a job that overlapped another reports none.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Jobs running in this process now, and jobs started since it began.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Metric names, in every epoch row and in the final metrics.
pub const PEAK_METRIC: &str = "memory_peak_mb";
pub const ESTIMATE_METRIC: &str = "memory_estimate_mb";

/// One job's view of the process's resident set; dropping it ends the job's claim.
pub struct JobMemory {
    ticket: u64,
    /// Resident kilobytes when the job began; None when the job shares the process or the
    /// platform has no peak to read.
    baseline_kb: Option<u64>,
}

impl JobMemory {
    /// Starts measuring a job: resets the process's peak when no other job is running.
    pub fn begin() -> Self {
        let others = RUNNING.fetch_add(1, Ordering::SeqCst);
        let ticket = STARTED.fetch_add(1, Ordering::SeqCst) + 1;
        let baseline_kb = if others == 0 {
            release_free_memory();
            reset_peak().then(|| read_status_kb("VmRSS:")).flatten()
        } else {
            None
        };
        Self {
            ticket,
            baseline_kb,
        }
    }

    /// The most memory the job has held so far, in MB above what the process held when it
    /// began; None once another job has shared the process.
    pub fn peak_mb(&self) -> Option<f64> {
        let baseline = self.baseline_kb?;
        if STARTED.load(Ordering::SeqCst) != self.ticket {
            return None;
        }
        let peak = read_status_kb("VmHWM:")?;
        Some(peak.saturating_sub(baseline) as f64 / 1024.0)
    }
}

impl Drop for JobMemory {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Memory an earlier job freed stays resident in the allocator's free lists, where this job
/// would reuse it without the resident set growing; handing it back to the system first makes
/// the job's growth its real footprint.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim only returns free pages to the system; any thread may call it.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Writing 5 to clear_refs sets the peak resident set to the current one (Linux 4.0+).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` line of /proc/self/status.
fn read_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_lone_job_sees_what_it_allocated_and_an_overlapping_one_sees_nothing() {
        let job = JobMemory::begin();
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let peak = job.peak_mb().expect("a lone job on Linux has a peak");
        assert!(
            (60.0..200.0).contains(&peak),
            "peak {peak} MB for a 64 MB block"
        );
        drop(block);

        let other = JobMemory::begin();
        assert_eq!(job.peak_mb(), None, "another job started meanwhile");
        assert_eq!(
            other.peak_mb(),
            None,
            "it began while the first was running"
        );
    }
}
