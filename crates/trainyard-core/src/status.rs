use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a run is in its life. Terminal statuses never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    /// A worker holds the run and prepares it (loads and encodes data, extracts activations,
    /// builds the model) before the first step.
    Initializing,
    Training,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Pending,
        RunStatus::Initializing,
        RunStatus::Training,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Initializing => "initializing",
            RunStatus::Training => "training",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// Pending, initializing or training: a run that holds (or waits for) a worker.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Pending | RunStatus::Initializing | RunStatus::Training
        )
    }

    /// Initializing or training: a worker holds the run and honours pause and cancel.
    pub fn is_held(self) -> bool {
        matches!(self, RunStatus::Initializing | RunStatus::Training)
    }

    /// The legal transitions. A worker crash puts a held run back to pending.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Pending, Initializing | Cancelled | Failed)
                | (
                    Initializing | Training,
                    Pending | Paused | Completed | Failed | Cancelled
                )
                | (Initializing, Training)
                | (Paused, Pending | Cancelled)
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status '{s}'; expected one of {}", names.join(", "))
            })
    }
}

/// A finer-grained position inside a status, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Queued,
    LoadingData,
    Training,
    Evaluating,
    Checkpointing,
    Done,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::LoadingData => "loading_data",
            Stage::Training => "training",
            Stage::Evaluating => "evaluating",
            Stage::Checkpointing => "checkpointing",
            Stage::Done => "done",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_have_no_way_out() {
        for from in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in RunStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_run_initializes_before_it_trains() {
        use RunStatus::*;
        assert!(Pending.can_become(Initializing));
        assert!(Initializing.can_become(Training));
        assert!(!Pending.can_become(Training));
        assert!(!Training.can_become(Initializing));
        for next in [Paused, Cancelled, Failed, Pending] {
            assert!(Initializing.can_become(next), "initializing -> {next}");
        }
    }

    #[test]
    fn paused_runs_resume_through_the_queue() {
        assert!(RunStatus::Training.can_become(RunStatus::Paused));
        assert!(RunStatus::Paused.can_become(RunStatus::Pending));
        assert!(!RunStatus::Paused.can_become(RunStatus::Training));
    }

    #[test]
    fn statuses_round_trip_through_strings() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
        }
        assert!("running".parse::<RunStatus>().is_err());
    }
}
