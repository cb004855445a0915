//! The one writer thread: group commit of whatever is waiting, then publication to readers.
//!
//! A durable commit costs an fsync, so the thread takes every job queued while the previous commit
//! ran, applies them to a staged copy of the cache, writes their rows in one transaction and commits
//! once. Only after the commit does it publish the staged cache (readers never see a change that
//! could still be lost) and answer each job's waiter.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redb::Database;
use tokio::sync::{mpsc, oneshot, watch};

use crate::cache::{Change, Document, FlagCache, Outcome};
use crate::now_unix;
use crate::storage::{self, Batch, StorageError};

/// The most jobs one commit takes; bounds the latency of the first job in a burst.
const MAX_BATCH: usize = 4096;
/// While a batch is smaller than the two before it together, wait this long for one more job:
/// senders acknowledged by the previous commit are usually on their way back, and taking them
/// into this commit halves the number of fsyncs under steady load.
const LINGER_GAP: Duration = Duration::from_micros(100);
/// The longest a batch lingers in all.
const LINGER_MAX: Duration = Duration::from_micros(500);

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
        reply: oneshot::Sender<Result<IntakeOutcome, StorageError>>,
    },
    Document {
        doc: Box<Document>,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
    Forget {
        before_unix: i64,
        reply: oneshot::Sender<Result<u64, StorageError>>,
    },
}

/// A handle on the writer thread; clones share it. The thread ends (and closes the database) once
/// every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
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
) -> Result<(Writer, Published, JoinHandle<()>), StorageError> {
    let db = storage::open(path, cache_bytes)?;
    let cache = Arc::new(ArcSwap::from_pointee(storage::load(&db)?));
    let (jobs, queue) = mpsc::channel(MAX_BATCH);
    let (commits_tx, commits) = watch::channel(0);
    let published = Published {
        cache: cache.clone(),
        commits,
    };
    let thread = std::thread::Builder::new()
        .name("receiver-writer".into())
        .spawn(move || writer_loop(db, cache, queue, commits_tx))
        .map_err(StorageError::Thread)?;
    Ok((Writer { jobs }, published, thread))
}

impl Writer {
    /// Takes a verified request: remembers its id and applies its change, durably, in one commit
    /// with whatever else is waiting.
    pub async fn intake(
        &self,
        request_id: String,
        change: Option<Change>,
    ) -> Result<IntakeOutcome, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Intake {
            request_id,
            change: change.map(Box::new),
            reply,
        })
        .await?;
        answer.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Loads a full environment document (bootstrap).
    pub async fn load_document(&self, doc: Document) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Document {
            doc: Box::new(doc),
            reply,
        })
        .await?;
        answer.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Forgets request ids taken before `before_unix`.
    pub async fn forget_requests_before(&self, before_unix: i64) -> Result<u64, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Forget { before_unix, reply }).await?;
        answer.await.map_err(|_| StorageError::WriterGone)?
    }

    /// False once the writer thread has ended (it only ends when every handle is gone, or by a
    /// panic): nothing can be acknowledged any more.
    pub fn is_alive(&self) -> bool {
        !self.jobs.is_closed()
    }

    async fn send(&self, job: Job) -> Result<(), StorageError> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| StorageError::WriterGone)
    }
}

fn writer_loop(
    db: Database,
    published: Arc<ArcSwap<FlagCache>>,
    mut queue: mpsc::Receiver<Job>,
    commits: watch::Sender<u64>,
) {
    // Only for timed waits on the queue; the thread itself never runs async work.
    let clock = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a timer-only runtime starts");
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut recent = [0usize; 2];
    while let Some(first) = queue.blocking_recv() {
        jobs.push(first);
        let linger_until = Instant::now() + LINGER_MAX;
        let expected = (recent[0] + recent[1]).min(MAX_BATCH);
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) if jobs.len() < expected && Instant::now() < linger_until => {
                    let next = clock
                        .block_on(async { tokio::time::timeout(LINGER_GAP, queue.recv()).await });
                    match next {
                        Ok(Some(job)) => jobs.push(job),
                        _ => break,
                    }
                }
                Err(_) => break,
            }
        }
        recent = [recent[1], jobs.len()];
        let mut staged = FlagCache::clone(&published.load());
        let started = Instant::now();
        let result = run_batch(&db, &mut staged, &jobs);
        tracing::debug!(
            jobs = jobs.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            committed = result.is_ok(),
            "batch done"
        );
        match result {
            Ok(answers) => {
                let changed = answers.iter().any(Answer::changed_cache);
                if changed {
                    published.store(Arc::new(staged));
                    commits.send_modify(|n| *n += 1);
                }
                for (job, answer) in jobs.drain(..).zip(answers) {
                    answer.send(job);
                }
            }
            Err(error) => {
                tracing::error!(%error, jobs = jobs.len(), "commit failed; nothing in it was acknowledged");
                for job in jobs.drain(..) {
                    Answer::Failed(error.to_string()).send(job);
                }
            }
        }
    }
    // Every handle is gone: the database closes here, cleanly.
    drop(db);
}

enum Answer {
    Intake(IntakeOutcome),
    Document,
    Forgot(u64),
    Failed(String),
}

impl Answer {
    fn changed_cache(&self) -> bool {
        matches!(
            self,
            Answer::Intake(IntakeOutcome::Applied) | Answer::Document
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
            (Job::Intake { reply, .. }, answer) => {
                let _ = reply.send(Err(answer.into_error()));
            }
            (Job::Document { reply, .. }, answer) => {
                let _ = reply.send(Err(answer.into_error()));
            }
            (Job::Forget { reply, .. }, answer) => {
                let _ = reply.send(Err(answer.into_error()));
            }
        }
    }

    fn into_error(self) -> StorageError {
        match self {
            Answer::Failed(message) => StorageError::BatchFailed(message),
            _ => StorageError::BatchFailed("the writer answered the wrong job".into()),
        }
    }
}

fn run_batch(
    db: &Database,
    staged: &mut FlagCache,
    jobs: &[Job],
) -> Result<Vec<Answer>, StorageError> {
    let now = now_unix();
    let mut batch = Batch::begin(db)?;
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
        });
    }
    batch.write(staged, &mut dirty)?;
    batch.commit()?;
    Ok(answers)
}
