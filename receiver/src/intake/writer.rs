//! The one writer thread: group commit of whatever is waiting, then publication to readers.
//!
//! A durable commit costs an fsync, so the thread takes every job queued while the previous commit
//! ran, applies them to a staged copy of the cache, writes their rows in one transaction and commits
//! once. It never waits for more: a lone request is committed at once, and under load the queue
//! fills while the previous commit runs, so batches grow with the load by themselves. Only after
//! the commit does it publish the staged cache (readers never see a change that could still be
//! lost) and answer each job's waiter.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use flagpost::document::EnvironmentDocument;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::now_unix;
use crate::documents::{Change, FlagCache, Outcome, UpstreamDocument};
use crate::error::WriteError;
use crate::storage::{Batch, Storage};

/// The most jobs one commit takes; bounds the latency of the first job in a burst.
const MAX_BATCH: usize = 4096;

/// What happened to one accepted web hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeOutcome {
    Applied,
    /// Older than what the cache holds: acknowledged, nothing changed.
    Superseded,
    /// The same request was taken before.
    Duplicate,
    /// An event type that is acknowledged but never applied.
    NotApplied,
}

impl IntakeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeOutcome::Applied => "applied",
            IntakeOutcome::Superseded => "superseded",
            IntakeOutcome::Duplicate => "duplicate",
            IntakeOutcome::NotApplied => "not_applied",
        }
    }

    /// The acknowledgement's body, `{"status": ...}`.
    pub fn response_body(self) -> &'static [u8] {
        match self {
            IntakeOutcome::Applied => br#"{"status":"applied"}"#,
            IntakeOutcome::Superseded => br#"{"status":"superseded"}"#,
            IntakeOutcome::Duplicate => br#"{"status":"duplicate"}"#,
            IntakeOutcome::NotApplied => br#"{"status":"not_applied"}"#,
        }
    }
}

enum Job {
    Intake {
        request_id: String,
        change: Option<Box<Change>>,
        reply: oneshot::Sender<Result<IntakeOutcome, WriteError>>,
    },
    Document {
        doc: Box<EnvironmentDocument>,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Forget {
        before_unix: i64,
        reply: oneshot::Sender<Result<u64, WriteError>>,
    },
    Upstream {
        doc: Arc<UpstreamDocument>,
        reply: oneshot::Sender<Result<Outcome, WriteError>>,
    },
}

/// A handle on the writer thread; clones share it. The thread ends (and closes the database) once
/// every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    commit_latency: Histogram,
}

/// What readers use: the last committed cache, and a counter that moves after each commit.
#[derive(Clone)]
pub struct Published {
    pub cache: Arc<ArcSwap<FlagCache>>,
    pub commits: watch::Receiver<u64>,
}

/// Opens the database, loads the cache and starts the writer thread.
pub fn start(
    path: &Path,
    cache_bytes: usize,
) -> Result<(Writer, Published, JoinHandle<()>), WriteError> {
    let (storage, loaded) = Storage::open(path, cache_bytes)?;
    let cache = Arc::new(ArcSwap::from_pointee(loaded));
    let (jobs, queue) = mpsc::channel(MAX_BATCH);
    let (commits_tx, commits) = watch::channel(0);
    let commit_latency = Histogram::new(exponential_buckets(0.00005, 2.0, 18));
    let published = Published {
        cache: cache.clone(),
        commits,
    };
    let thread = WriterThread {
        storage,
        published: cache,
        commits: commits_tx,
        commit_latency: commit_latency.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("receiver-writer".into())
        .spawn(move || thread.run(queue))
        .map_err(|error| WriteError::WriterThread(Arc::new(error)))?;
    let writer = Writer {
        jobs,
        commit_latency,
    };
    Ok((writer, published, thread))
}

impl Writer {
    /// Takes a verified request: remembers its id and applies its change, durably, in one commit
    /// with whatever else is waiting.
    pub async fn intake(
        &self,
        request_id: String,
        change: Option<Change>,
    ) -> Result<IntakeOutcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Intake {
            request_id,
            change: change.map(Box::new),
            reply,
        })
        .await?;
        answer.await.map_err(|_| WriteError::WriterGone)?
    }

    /// Loads a full environment document (bootstrap).
    pub async fn load_document(&self, doc: EnvironmentDocument) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Document {
            doc: Box::new(doc),
            reply,
        })
        .await?;
        answer.await.map_err(|_| WriteError::WriterGone)?
    }

    /// Loads a document fetched from an upstream Flagsmith, durably; `Superseded` when the cache
    /// already holds a newer one.
    pub async fn load_upstream(&self, doc: UpstreamDocument) -> Result<Outcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Upstream {
            doc: Arc::new(doc),
            reply,
        })
        .await?;
        answer.await.map_err(|_| WriteError::WriterGone)?
    }

    /// Forgets request ids taken before `before_unix`.
    pub async fn forget_requests_before(&self, before_unix: i64) -> Result<u64, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Forget { before_unix, reply }).await?;
        answer.await.map_err(|_| WriteError::WriterGone)?
    }

    /// False once the writer thread has ended (it only ends when every handle is gone, or by a
    /// panic): nothing can be acknowledged any more.
    pub fn is_alive(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// Seconds from the start of each batch's write transaction to the end of its durable
    /// commit, observed after every commit (a clone sharing the writer's histogram).
    pub fn commit_latency(&self) -> Histogram {
        self.commit_latency.clone()
    }

    async fn send(&self, job: Job) -> Result<(), WriteError> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| WriteError::WriterGone)
    }
}

/// What the writer thread owns.
struct WriterThread {
    storage: Storage,
    published: Arc<ArcSwap<FlagCache>>,
    commits: watch::Sender<u64>,
    commit_latency: Histogram,
}

impl WriterThread {
    fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            jobs.push(first);
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.commit(&mut jobs);
        }
        // Every handle is gone: the database closes here, cleanly, when `self` drops.
    }

    /// Commits every job in `jobs` in one transaction, then publishes and answers them.
    fn commit(&self, jobs: &mut Vec<Job>) {
        let mut staged = FlagCache::clone(&self.published.load());
        let result = self
            .storage
            .write(|batch| run_batch(batch, &mut staged, jobs));
        match result {
            Ok((answers, elapsed)) => {
                self.commit_latency.observe(elapsed.as_secs_f64());
                tracing::debug!(
                    jobs = jobs.len(),
                    elapsed_us = elapsed.as_micros() as u64,
                    "batch committed"
                );
                // Published before anyone is answered: an acknowledged change is visible.
                let replaced = answers.iter().any(Answer::changed_cache).then(|| {
                    let replaced = self.published.swap(Arc::new(staged));
                    self.commits.send_modify(|n| *n += 1);
                    replaced
                });
                for (job, answer) in jobs.drain(..).zip(answers) {
                    answer.send(job);
                }
                // Freeing what the batch replaced waits until the waiters have their answers.
                drop(replaced);
            }
            Err(error) => {
                tracing::error!(%error, jobs = jobs.len(), "commit failed; nothing in it was acknowledged");
                for job in jobs.drain(..) {
                    job.fail(error.clone());
                }
            }
        }
    }
}

enum Answer {
    Intake(IntakeOutcome),
    Document,
    Forgot(u64),
    Upstream(Outcome),
}

impl Answer {
    fn changed_cache(&self) -> bool {
        matches!(
            self,
            Answer::Intake(IntakeOutcome::Applied)
                | Answer::Document
                | Answer::Upstream(Outcome::Applied)
        )
    }

    fn send(self, job: Job) {
        // A waiter that gave up (client gone) no longer needs the answer.
        match (job, self) {
            (Job::Intake { reply, .. }, Answer::Intake(outcome)) => {
                let _ = reply.send(Ok(outcome));
            }
            (Job::Document { reply, .. }, Answer::Document) => {
                let _ = reply.send(Ok(()));
            }
            (Job::Forget { reply, .. }, Answer::Forgot(n)) => {
                let _ = reply.send(Ok(n));
            }
            (Job::Upstream { reply, .. }, Answer::Upstream(outcome)) => {
                let _ = reply.send(Ok(outcome));
            }
            // `run_batch` answers each job with its own kind, in order.
            (job, _) => job.fail(WriteError::Corrupt(
                "the writer answered the wrong job".into(),
            )),
        }
    }
}

impl Job {
    fn fail(self, error: WriteError) {
        match self {
            Job::Intake { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Job::Document { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Job::Forget { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Job::Upstream { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

fn run_batch(
    batch: &mut Batch<'_>,
    staged: &mut FlagCache,
    jobs: &[Job],
) -> Result<Vec<Answer>, WriteError> {
    let now = now_unix();
    let mut dirty = Vec::new();
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        answers.push(match job {
            Job::Intake {
                request_id, change, ..
            } => {
                if !batch.remember(request_id, now)? {
                    Answer::Intake(IntakeOutcome::Duplicate)
                } else {
                    match change {
                        None => Answer::Intake(IntakeOutcome::NotApplied),
                        Some(change) => match staged.apply(change, now, &mut dirty) {
                            Outcome::Applied => Answer::Intake(IntakeOutcome::Applied),
                            Outcome::Superseded => Answer::Intake(IntakeOutcome::Superseded),
                        },
                    }
                }
            }
            Job::Document { doc, .. } => {
                staged.apply_document(doc, now, &mut dirty);
                Answer::Document
            }
            Job::Forget { before_unix, .. } => Answer::Forgot(batch.forget_before(*before_unix)?),
            Job::Upstream { doc, .. } => {
                Answer::Upstream(staged.apply_upstream(doc.clone(), now, &mut dirty))
            }
        });
    }
    batch.write(staged, &mut dirty)?;
    Ok(answers)
}
