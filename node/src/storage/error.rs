//! The one error type of storage: what every engine returns when a transaction fails.

/// A storage failure. Nothing was committed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database holds fewer committed transactions than its commit mark records: acknowledged
    /// writes were lost (a damaged or truncated WAL, or an older copy put in place).
    #[error(
        "the database has lost committed transactions: it holds {in_database} commits but {mark} records {marked}; \
         its write-ahead log was damaged or truncated, or an older copy of the file was put in place"
    )]
    LostCommits { marked: u64, in_database: u64, mark: std::path::PathBuf },
    /// This replica no longer holds the database's lease (PostgreSQL, active/standby): another
    /// replica may be active, so nothing was written.
    #[error("this replica no longer holds the lease on its database: another replica may be active; nothing was written")]
    Fenced,
    /// This storage engine does not do what was asked; the message says what to do instead.
    #[error("{0}")]
    Unsupported(&'static str),
}
