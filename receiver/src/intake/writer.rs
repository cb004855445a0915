//! The one writer thread: group commit of whatever is waiting, then publication to readers.
//!
//! Making a batch durable costs a sync of the disk (of its rows in the redo log, see
//! [`Storage::write`]), so the thread takes every job queued while the previous commit ran, applies
//! them to a staged copy of the cache, writes their rows in one transaction and makes it durable
//! once. It never waits for more: a lone request is committed at once, and under load the queue
//! fills while the previous commit runs, so batches grow with the load by themselves. Only after
//! the commit does it publish the staged cache (readers never see a change that could still be
//! lost) and answer each job's waiter.
//!
//! A batch that cannot commit (a full disk, a damaged file) is answered with the cause, nothing of
//! it published, and the writer is *failing* ([`Writer::commit_failure`], on `/readyz`): it reopens
//! the file where redb needs it (after an I/O error) and tries an empty commit every
//! [`RETRY_EVERY`], refusing what arrives meanwhile, so it recovers by itself once space is freed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use flagpost::store::redo;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::{now_micros, now_unix};
use crate::documents::{
    Change, Dirty, FlagCache, FlagpostDocument, Outcome, SenderCheck, UpstreamDocument,
};
use crate::error::WriteError;
use crate::storage::{Batch, RequestId, Storage};

/// The most jobs one commit takes; bounds the latency of the first job in a burst.
const MAX_BATCH: usize = 4096;

/// How often a failing writer tries to commit again without being asked to.
const RETRY_EVERY: Duration = Duration::from_secs(1);

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
    /// Every outcome, for the metrics shown at zero from start.
    pub const ALL: [IntakeOutcome; 4] = [
        IntakeOutcome::Applied,
        IntakeOutcome::Superseded,
        IntakeOutcome::Duplicate,
        IntakeOutcome::NotApplied,
    ];

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
        request_id: RequestId,
        change: Option<Box<Change>>,
        reply: oneshot::Sender<Result<IntakeOutcome, WriteError>>,
    },
    Document {
        doc: Box<FlagpostDocument>,
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
    /// Take the logged batches into the file if they have waited long enough: sent every
    /// [`redo::CHECKPOINT_EVERY`] by a ticker, so that a quiet writer does not keep them waiting.
    Checkpoint,
}

/// A handle on the writer thread; clones share it. The thread ends (and closes the database) once
/// every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    commit_latency: Histogram,
    failure: Failure,
}

/// Why the writer's last commit failed; `None` once one succeeded.
type Failure = Arc<Mutex<Option<String>>>;

/// What readers use: the last committed cache, and a counter that moves after each commit.
#[derive(Clone)]
pub struct Published {
    pub cache: Arc<ArcSwap<FlagCache>>,
    pub commits: watch::Receiver<u64>,
    /// The cache file's id ([`Storage::file_id`]).
    pub file_id: u64,
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
    let failure = Failure::default();
    let published = Published {
        cache: cache.clone(),
        commits,
        file_id: storage.file_id(),
    };
    let thread = WriterThread {
        storage: Some(storage),
        path: path.to_owned(),
        cache_bytes,
        failure: failure.clone(),
        published: cache,
        commits: commits_tx,
        commit_latency: commit_latency.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("receiver-writer".into())
        .spawn(move || thread.run(queue))
        .map_err(|error| WriteError::WriterThread(Arc::new(error)))?;
    redo::spawn_checkpoint_ticker(
        "receiver-checkpoints",
        jobs.downgrade(),
        redo::CHECKPOINT_EVERY,
        || Job::Checkpoint,
    );
    let writer = Writer {
        jobs,
        commit_latency,
        failure,
    };
    Ok((writer, published, thread))
}

impl Writer {
    /// Takes a verified request: remembers its id and applies its change, durably, in one commit
    /// with whatever else is waiting.
    pub async fn intake(
        &self,
        request_id: RequestId,
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

    /// Loads a document read from flagpost (bootstrap, and after a segment event): a document
    /// of a database the environment no longer follows is dropped, one of a new database is
    /// followed (see [`crate::documents::sender`]).
    pub async fn load_flagpost_document(&self, doc: FlagpostDocument) -> Result<(), WriteError> {
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

    /// Why the writer cannot commit (a full disk, a damaged file), while it cannot; it retries by
    /// itself, and this turns `None` with its next durable commit.
    pub fn commit_failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    /// `None` while the file could not be reopened.
    storage: Option<Storage>,
    path: std::path::PathBuf,
    cache_bytes: usize,
    failure: Failure,
    published: Arc<ArcSwap<FlagCache>>,
    commits: watch::Sender<u64>,
    commit_latency: Histogram,
}

impl WriterThread {
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        // Each pass takes every job waiting, in one go (one lock of the queue, not one per job).
        while self.next_jobs(&mut queue, &mut jobs) {
            if jobs.iter().all(|job| matches!(job, Job::Checkpoint)) {
                jobs.clear();
                self.checkpoint_if_due();
                continue;
            }
            match self.recover() {
                Ok(()) => self.commit(&mut jobs),
                Err(error) => fail(&mut jobs, error),
            }
        }
        // Every handle is gone: the logged batches go into the file, which closes cleanly. A
        // failing writer leaves the log for the next start rather than write a file it could not
        // commit to.
        if let Some(storage) = self.storage.take().filter(|_| !self.failing()) {
            storage.close();
        }
    }

    /// A quiet writer's checkpoint (a batch is made durable by the file when one is due).
    fn checkpoint_if_due(&mut self) {
        if self.failing() {
            return; // its own retries commit durably
        }
        if let Some(Err(error)) = self.storage.as_mut().map(Storage::checkpoint_if_due) {
            if matches!(error, WriteError::DatabaseFile(_)) {
                self.storage = None;
            }
            self.set_failure(Some(&error));
        }
    }

    /// Waits for jobs and takes all that are queued into `jobs`; false once every handle is gone.
    /// While failing, wakes every [`RETRY_EVERY`] to try to commit again, so that `/readyz`
    /// recovers without waiting for a web hook.
    fn next_jobs(&mut self, queue: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) -> bool {
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        while self.failing() {
            match queue.try_recv() {
                Ok(job) => {
                    jobs.push(job);
                    return true;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            std::thread::sleep(step);
            waited += step;
            if waited >= RETRY_EVERY {
                waited = Duration::ZERO;
                let _ = self.recover();
            }
        }
        queue.blocking_recv_many(jobs, MAX_BATCH) > 0
    }

    fn failing(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn set_failure(&self, failure: Option<&WriteError>) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() && slot.is_some() {
            tracing::info!("the storage commits again");
        }
        *slot = failure.map(ToString::to_string);
    }

    /// While failing: reopens the file if redb needs it, then tries an empty durable commit.
    fn recover(&mut self) -> Result<(), WriteError> {
        if !self.failing() {
            return Ok(());
        }
        let storage = match self.storage.take() {
            Some(storage) if storage.is_usable() => Ok(storage),
            Some(storage) => storage.reopen(),
            None => Storage::open_file(&self.path, self.cache_bytes),
        };
        let probe = storage.and_then(|mut storage| {
            let committed = storage.probe();
            self.storage = Some(storage);
            committed
        });
        match probe {
            Ok(_) => {
                self.set_failure(None);
                Ok(())
            }
            Err(error) => {
                self.set_failure(Some(&error));
                Err(error)
            }
        }
    }

    /// Commits every job in `jobs` in one transaction, then publishes and answers them.
    fn commit(&mut self, jobs: &mut Vec<Job>) {
        let Some(storage) = &mut self.storage else {
            return fail(
                jobs,
                WriteError::DatabaseFile("the database is not open".into()),
            );
        };
        let mut staged = FlagCache::clone(&self.published.load());
        let result = storage.write(|batch| run_batch(batch, &mut staged, jobs));
        match result {
            Ok(((answers, changed), elapsed)) => {
                self.commit_latency.observe(elapsed.as_secs_f64());
                tracing::debug!(
                    jobs = jobs.len(),
                    elapsed_us = elapsed.as_micros() as u64,
                    "batch committed"
                );
                // Published before anyone is answered: an acknowledged change is visible.
                let replaced = changed.then(|| {
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
                if matches!(error, WriteError::DatabaseFile(_)) {
                    // Damaged since the start check: closed, so that recovery runs that check.
                    self.storage = None;
                }
                self.set_failure(Some(&error));
                fail(jobs, error);
            }
        }
    }
}

/// Answers every job of a batch that did not commit; one log line per kind per interval.
fn fail(jobs: &mut Vec<Job>, error: WriteError) {
    let text = error.to_string();
    if let Some(suppressed) = flagpost::process::ERROR_LOG.admit("commit failed", &text) {
        tracing::error!(error = %text, jobs = jobs.len(), suppressed, "commit failed; nothing in it was acknowledged");
    }
    for job in jobs.drain(..) {
        job.fail(error.clone());
    }
}

enum Answer {
    Intake(IntakeOutcome),
    Document,
    Forgot(u64),
    Upstream(Outcome),
    /// Nothing to do in a batch: the batch is made durable by the file when a checkpoint is due.
    Checkpoint,
}

impl Answer {
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
            (Job::Checkpoint, Answer::Checkpoint) => {}
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
            Job::Checkpoint => {}
        }
    }
}

/// Applies one accepted change, unless it comes from a flagpost database its environment no
/// longer follows ([`crate::documents::sender`]).
fn apply_change(
    staged: &mut FlagCache,
    change: &Change,
    now: i64,
    dirty: &mut Vec<Dirty>,
) -> IntakeOutcome {
    let stale = change.sender.is_some_and(|sender| {
        staged.check_sender(change.env, sender, dirty) == SenderCheck::Retired
    });
    if stale {
        return IntakeOutcome::Superseded;
    }
    match staged.apply(change, now, dirty) {
        Outcome::Applied => IntakeOutcome::Applied,
        Outcome::Superseded => IntakeOutcome::Superseded,
    }
}

/// Runs every job on `staged` and writes what changed; answers each job's answer, and whether
/// the cache changed (and must be published).
fn run_batch(
    batch: &mut Batch<'_>,
    staged: &mut FlagCache,
    jobs: &[Job],
) -> Result<(Vec<Answer>, bool), WriteError> {
    let now = now_unix();
    let mut dirty = Vec::new();
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        answers.push(match job {
            Job::Intake {
                request_id, change, ..
            } => {
                if !batch.remember(*request_id, now)? {
                    Answer::Intake(IntakeOutcome::Duplicate)
                } else {
                    match change {
                        None => Answer::Intake(IntakeOutcome::NotApplied),
                        Some(change) => {
                            Answer::Intake(apply_change(staged, change, now, &mut dirty))
                        }
                    }
                }
            }
            Job::Document { doc, .. } => {
                let env = doc.document.parsed.env_id;
                if staged.check_sender(env, doc.sender, &mut dirty) != SenderCheck::Retired {
                    staged.apply_flagpost_document(doc, now, &mut dirty);
                }
                Answer::Document
            }
            Job::Forget { before_unix, .. } => Answer::Forgot(batch.forget_before(*before_unix)?),
            Job::Upstream { doc, .. } => {
                Answer::Upstream(staged.apply_upstream(doc.clone(), now, &mut dirty))
            }
            Job::Checkpoint => Answer::Checkpoint,
        });
    }
    // Whatever changed a key (a change applied, a document, a sender followed) is published,
    // with its environment's revision moved: change streams follow the revisions.
    let changed = !dirty.is_empty();
    staged.stamp_changed(&mut dirty, now_micros());
    batch.write(staged, &mut dirty)?;
    Ok((answers, changed))
}
