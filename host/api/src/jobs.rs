//! Long work (an image import or build) as a job: the request answers 202 with the job at once,
//! `GET /api/v1/jobs/{id}` follows its step and progress, and its end (the result or the error).
//! Jobs live as long as the server; the last [`KEEP`] are kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use utoipa::ToSchema;
use wulf_core::boot_status::now_ms;

/// Finished jobs kept to be read.
const KEEP: usize = 100;
/// Jobs running at once: each holds a blocking thread the boot server's work needs too.
pub(crate) const MAX_RUNNING: usize = 4;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// A job as `GET /api/v1/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Job {
    pub(crate) id: u64,
    /// `image.import`, `image.build`.
    pub(crate) kind: String,
    /// What it works on: the image's name.
    pub(crate) subject: String,
    pub(crate) state: JobState,
    /// The step under way, as progress bars name it.
    pub(crate) step: String,
    pub(crate) done: u64,
    /// In the step's own unit (bytes or entries), when known.
    pub(crate) total: Option<u64>,
    /// Unix milliseconds.
    pub(crate) started: u64,
    pub(crate) finished: Option<u64>,
    /// Why it failed.
    pub(crate) error: Option<String>,
    /// What it made (the image record), once it succeeded.
    #[schema(value_type = Option<Object>)]
    pub(crate) result: Option<serde_json::Value>,
}

#[derive(Default)]
pub(crate) struct Jobs {
    next: AtomicU64,
    all: Mutex<VecDeque<Arc<Mutex<Job>>>>,
}

/// One job's handle for the work it tracks: its progress, then its end.
#[derive(Clone)]
pub(crate) struct Tracker(Arc<Mutex<Job>>);

impl Jobs {
    /// A new running job, or `None` when [`MAX_RUNNING`] already run.
    pub(crate) fn start(&self, kind: &str, subject: &str) -> Option<(Job, Tracker)> {
        let running = self
            .all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|j| j.lock().unwrap_or_else(|p| p.into_inner()).state == JobState::Running)
            .count();
        if running >= MAX_RUNNING {
            return None;
        }
        Some(self.start_unchecked(kind, subject))
    }

    fn start_unchecked(&self, kind: &str, subject: &str) -> (Job, Tracker) {
        let job = Job {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            state: JobState::Running,
            step: "starting".to_owned(),
            done: 0,
            total: None,
            started: now_ms(),
            finished: None,
            error: None,
            result: None,
        };
        let shared = Arc::new(Mutex::new(job.clone()));
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.push_back(Arc::clone(&shared));
        while all.len() > KEEP {
            // The oldest finished job goes; running ones are never dropped.
            match all.iter().position(|j| {
                j.lock().unwrap_or_else(|p| p.into_inner()).state != JobState::Running
            }) {
                Some(at) => {
                    all.remove(at);
                }
                None => break,
            }
        }
        (job, Tracker(shared))
    }

    pub(crate) fn get(&self, id: u64) -> Option<Job> {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|j| j.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .find(|j| j.id == id)
    }

    pub(crate) fn list(&self) -> Vec<Job> {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|j| j.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }
}

impl Tracker {
    fn with(&self, change: impl FnOnce(&mut Job)) {
        change(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn finish(&self, outcome: Result<serde_json::Value, String>) {
        self.with(|job| {
            job.finished = Some(now_ms());
            match outcome {
                Ok(result) => {
                    job.state = JobState::Succeeded;
                    job.result = Some(result);
                }
                Err(error) => {
                    job.state = JobState::Failed;
                    job.error = Some(error);
                }
            }
        });
    }
}

impl wulf_image::Progress for Tracker {
    fn start(&self, step: &str, total: Option<u64>) {
        self.with(|job| {
            step.clone_into(&mut job.step);
            job.done = 0;
            job.total = total;
        });
    }

    fn advance(&self, amount: u64) {
        self.with(|job| job.done = job.done.saturating_add(amount));
    }

    fn finish(&self) {}
}
