//! The sidecar's write errors: why a change, a relayed event, a flag file or a delivery record was
//! not written. One type for the whole write path; [`crate::api::error`] maps it to HTTP statuses.

/// A storage failure: the disk, the file, or a record that does not decode. Cloneable so that one
/// failed commit can answer every waiter of its batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("storage error: {message}")]
pub struct StoreError {
    message: String,
    file_failed: bool,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            file_failed: false,
        }
    }

    /// The disk or the file failed (an I/O error, a damaged page): the database is not trusted
    /// again until it has been reopened through its integrity check.
    pub fn file_failed(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            file_failed: true,
        }
    }

    pub fn is_file_failure(&self) -> bool {
        self.file_failed
    }
}

/// Why a write did not happen. Every variant but [`WriteError::Storage`] is a refusal: the change
/// broke a rule, and nothing of it was written while the rest of its batch committed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("environment {0} does not exist")]
    UnknownEnvironment(String),
    #[error("project {0} does not exist")]
    UnknownProject(u64),
    #[error("feature {0} does not exist")]
    UnknownFeature(String),
    #[error("feature {name:?} already exists in project {project} (id {id})")]
    FeatureExists { project: u64, name: String, id: u64 },
    #[error("feature {0:?} is declared in a flag file; change the file instead")]
    ManagedByFiles(String),
    #[error("feature {0:?} was made through the API; a flag file cannot declare it")]
    ManagedByApi(String),
    #[error(
        "feature {feature:?} belongs to project {feature_project}, not to environment {environment}'s project"
    )]
    WrongProject {
        feature: String,
        feature_project: u64,
        environment: String,
    },
    #[error("{0} has no such override")]
    NoSuchOverride(String),
    #[error("segment {0} does not exist")]
    UnknownSegment(u64),
    #[error("segment {name:?} already exists in project {project} (id {id})")]
    SegmentExists { project: u64, name: String, id: u64 },
    #[error("segment {0:?} is declared in a flag file; change the file instead")]
    SegmentManagedByFiles(String),
    #[error("segment {0:?} was made through the API; a flag file cannot declare it")]
    SegmentManagedByApi(String),
    #[error("feature {feature} has no multivariate option {option}")]
    UnknownOption { feature: u64, option: u64 },
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyConflict,
    #[error("{0}")]
    Invalid(String),
    /// The batch could not commit (disk full, I/O error): nothing of it was written.
    #[error("not committed: {0}")]
    Storage(#[from] StoreError),
}

impl WriteError {
    /// A refusal leaves only its own job out of the batch; a storage error fails the batch.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, WriteError::Storage(_))
    }
}
