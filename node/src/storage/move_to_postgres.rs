//! `exchange-node move-to-postgres --config C --to URL`: moves a stopped node's custody from its
//! SQLite file into a new, empty PostgreSQL database, so that an existing node can run on
//! PostgreSQL (and with a standby) without losing what it holds.
//!
//! Why a copy of the tables and not a replay through the `Store` trait: the two stores keep the same
//! tables with the same meaning (node/migrations/postgres says where the types differ), and a copy
//! moves everything (custody, inboxes, the audit chain with its hashes, tokens, subscriptions)
//! without a rule being applied twice. Positions (`seq`) are kept as they were, so agencies' inbox
//! cursors and the audit chain stay valid; the identity sequences are then set past them.
//!
//! Safety, in order: the node must be stopped (its ports free); the SQLite file is opened as the
//! node would open it (integrity and commit-mark checks, schema brought up to date); the target is
//! locked with the replicas' lease (no replica may run on it meanwhile) and must be empty; the whole
//! copy is one PostgreSQL transaction, verified before `COMMIT` (per table: the row count and an
//! order-independent digest of every value, read back from PostgreSQL), so a failure leaves the
//! target as empty as it was. The SQLite file is never changed or deleted: a marker beside it
//! ([`MOVED_MARKER`]) makes the node refuse to start on it again, which would fork the node's history.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, bail};
use futures::TryStreamExt as _;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _, Postgres, QueryBuilder, Row};

use super::postgres::WRITE_LOCK;
use super::postgres::lease::LEASE_LOCK;
use super::postgres::url::redacted;
use super::{PgStore, SqliteStore};
use crate::config::NodeConfig;

/// The marker written beside the SQLite file once its content lives in PostgreSQL.
pub const MOVED_MARKER: &str = "node.db.moved-to-postgres";

/// Rows per multi-row INSERT (PostgreSQL allows 65,535 bound values per statement; tables have at
/// most 13 columns) and payload bytes per statement, so memory stays bounded by one statement.
const ROWS_PER_STATEMENT: usize = 400;
const BYTES_PER_STATEMENT: usize = 16 * 1024 * 1024;

/// Tables of the schema that are not the node's data.
const NOT_DATA: [&str; 1] = ["_sqlx_migrations"];

/// What was moved: each table's name and row count.
#[derive(Debug)]
pub struct Moved {
    pub tables: Vec<(String, u64)>,
}

/// Runs the command and prints what it did.
pub fn run(config: &Path, to: &str) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config)?;
    if let Some(url) = &cfg.storage.url {
        bail!(
            "{} already keeps node {} in PostgreSQL (storage.url = {}); move-to-postgres reads a node's SQLite file (nothing was changed)",
            config.display(),
            cfg.node_id,
            redacted(url)
        );
    }
    crate::backup::restore::ensure_stopped(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let moved = rt.block_on(move_database(&cfg.database_path(), to))?;
    let rows: u64 = moved.tables.iter().map(|(_, n)| n).sum();
    println!("moved node {} from {} into {}", cfg.node_id, cfg.database_path().display(), redacted(to));
    for (table, n) in &moved.tables {
        println!("  {table:<24} {n:>10} rows, verified");
    }
    println!("  {:<24} {rows:>10} rows in {} tables", "total", moved.tables.len());
    println!();
    println!("Next: set [storage] url in {} to the new database and start the node.", config.display());
    println!(
        "{} is left as it was, marked with {MOVED_MARKER}: the node refuses to start on it again. Attachment files stay in {}.",
        cfg.database_path().display(),
        cfg.attachments_dir().display()
    );
    Ok(())
}

/// Refuses to start a node on a SQLite file whose content was moved to PostgreSQL.
pub fn refuse_moved(database: &Path) -> anyhow::Result<()> {
    let marker = marker_path(database);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        bail!(
            "the custody in {} was moved to PostgreSQL ({}: {}): the node neither starts on that file nor moves it again, since that \
             would fork its history. Set [storage] url to that database; remove the marker only if the PostgreSQL copy was never used",
            database.display(),
            marker.display(),
            text.trim()
        );
    }
    Ok(())
}

fn marker_path(database: &Path) -> std::path::PathBuf {
    database.with_file_name(MOVED_MARKER)
}

/// Copies the SQLite database at `database` into the empty PostgreSQL database at `url`, verifies
/// the copy and commits it; then marks the SQLite file as moved.
pub async fn move_database(database: &Path, url: &str) -> anyhow::Result<Moved> {
    if !database.exists() {
        bail!("there is no database at {}: check data_dir in the configuration (nothing was changed)", database.display());
    }
    refuse_moved(database)?;
    // Opened as the node opens it: checked against damage and lost commits, schema brought up to date.
    SqliteStore::open_standalone(database)
        .await
        .with_context(|| format!("cannot open {} (nothing was changed)", database.display()))?;
    let mut source = SqliteConnectOptions::new().filename(database).read_only(true).connect().await?;
    // The target's schema, created as a node would create it.
    PgStore::open_standalone(url).await.with_context(|| format!("cannot open {} (nothing was changed)", redacted(url)))?;
    let mut lease = PgConnection::connect(url).await?;
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEASE_LOCK).fetch_one(&mut lease).await?;
    if !free {
        bail!("a node replica is running on {} (it holds the lease): stop it first (nothing was changed)", redacted(url));
    }
    let mut target = PgConnection::connect(url).await?;
    let moved = copy_all(&mut source, &mut target).await;
    lease.close().await?;
    let moved = moved?;
    let marker = marker_path(database);
    let note = serde_json::json!({ "to": redacted(url), "at_ms": exchange_wire::now_ms() }).to_string();
    std::fs::write(&marker, note).with_context(|| format!("the copy is committed, but {} could not be written", marker.display()))?;
    crate::backup::files::sync_dir(database.parent().unwrap_or(Path::new(".")))?;
    Ok(moved)
}

/// The copy, in one transaction on `target`.
async fn copy_all(source: &mut SqliteConnection, target: &mut PgConnection) -> anyhow::Result<Moved> {
    let mut tx = target.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *tx).await?;
    let tables = table_columns(&mut tx, source).await?;
    for table in &tables {
        refuse_non_empty(&mut tx, table).await?;
    }
    let mut moved = Moved { tables: Vec::new() };
    for table in &tables {
        let (rows, digest) = copy_table(source, &mut tx, table).await?;
        let (back, back_digest) = digest_postgres(&mut tx, table).await?;
        if (back, back_digest) != (rows, digest) {
            bail!(
                "table {}: {rows} rows read from SQLite, but {back} rows with different content read back from PostgreSQL; \
                 nothing was committed — report this with both databases kept as they are",
                table.name
            );
        }
        for column in table.columns.iter().filter(|c| c.identity) {
            let set = format!(
                "SELECT setval(pg_get_serial_sequence('{t}', '{c}'), (SELECT COALESCE(MAX({c}), 0) FROM {t}) + 1, false)",
                t = table.name,
                c = column.name
            );
            sqlx::query(sqlx::AssertSqlSafe(set)).execute(&mut *tx).await?;
        }
        moved.tables.push((table.name.clone(), rows));
    }
    tx.commit().await.context("PostgreSQL refused the COMMIT of the copy: nothing was moved")?;
    Ok(moved)
}

/// A column as PostgreSQL types it.
struct Column {
    name: String,
    ty: ColumnType,
    identity: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum ColumnType {
    Integer,
    Bytes,
    Text,
}

struct Table {
    name: String,
    columns: Vec<Column>,
}

impl Table {
    fn column_list(&self) -> String {
        self.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// The tables of the PostgreSQL schema, checked against the SQLite file's: the same tables with the
/// same columns, or the two schemas are from different versions and nothing is copied.
async fn table_columns(target: &mut PgConnection, source: &mut SqliteConnection) -> anyhow::Result<Vec<Table>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut *target)
    .await?;
    let sqlite_names: BTreeSet<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetch_all(&mut *source).await?.into_iter().collect();
    let mut tables = Vec::new();
    for name in names.into_iter().filter(|n| !NOT_DATA.contains(&n.as_str())) {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_identity::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&name)
        .fetch_all(&mut *target)
        .await?;
        let mut columns = Vec::new();
        for (column, ty, identity) in rows {
            let ty = match ty.as_str() {
                "bigint" => ColumnType::Integer,
                "bytea" => ColumnType::Bytes,
                "text" => ColumnType::Text,
                other => bail!("table {name}, column {column}: PostgreSQL type {other} has no SQLite counterpart here"),
            };
            columns.push(Column { name: column, ty, identity: identity == "YES" });
        }
        let in_sqlite: BTreeSet<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1)").bind(&name).fetch_all(&mut *source).await?.into_iter().collect();
        let in_postgres: BTreeSet<String> = columns.iter().map(|c| c.name.clone()).collect();
        if in_sqlite != in_postgres {
            bail!(
                "table {name} has columns {in_sqlite:?} in SQLite but {in_postgres:?} in PostgreSQL: the two schemas are from different \
                 versions of exchange-node; run the same version that wrote the SQLite file (nothing was changed)"
            );
        }
        tables.push(Table { name, columns });
    }
    let in_postgres: BTreeSet<String> = tables.iter().map(|t| t.name.clone()).collect();
    let left_out: Vec<&String> = sqlite_names.iter().filter(|n| !in_postgres.contains(*n) && !NOT_DATA.contains(&n.as_str())).collect();
    if !left_out.is_empty() {
        bail!("the SQLite file has tables {left_out:?} that the PostgreSQL schema lacks: use the same exchange-node version for both (nothing was changed)");
    }
    Ok(tables)
}

/// The target must hold no node's data: `node_state` only its initial rows, every other table none.
async fn refuse_non_empty(target: &mut PgConnection, table: &Table) -> anyhow::Result<()> {
    let check = if table.name == "node_state" {
        "SELECT EXISTS (SELECT 1 FROM node_state WHERE value <> 0)".to_string()
    } else {
        format!("SELECT EXISTS (SELECT 1 FROM {})", table.name)
    };
    let used: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(check)).fetch_one(&mut *target).await?;
    if used {
        bail!(
            "the target database already holds a node's data (table {} is not empty): move into a new, empty database (nothing was changed)",
            table.name
        );
    }
    Ok(())
}

/// One value, as both stores hold it.
enum Value {
    Integer(Option<i64>),
    Bytes(Option<Vec<u8>>),
    Text(Option<String>),
}

impl Value {
    fn size(&self) -> usize {
        match self {
            Value::Bytes(Some(b)) => b.len(),
            Value::Text(Some(t)) => t.len(),
            _ => 8,
        }
    }
}

/// An order-independent digest of a table's rows: the sum of each row's SHA-256 (rows are unique by
/// primary key, so equal sums mean equal contents but for a deliberate collision).
#[derive(Default, Clone, Copy, PartialEq, Debug)]
struct RowsDigest([u64; 4]);

impl RowsDigest {
    fn add(&mut self, row: &[Value]) {
        let mut h = Sha256::new();
        for v in row {
            let integer;
            let (tag, bytes): (u8, &[u8]) = match v {
                Value::Integer(Some(i)) => {
                    integer = i.to_be_bytes();
                    (1, &integer)
                }
                Value::Bytes(Some(b)) => (2, b),
                Value::Text(Some(t)) => (3, t.as_bytes()),
                Value::Integer(None) | Value::Bytes(None) | Value::Text(None) => (0, &[]),
            };
            h.update([tag]);
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        let d = h.finalize();
        for (lane, chunk) in self.0.iter_mut().zip(d.chunks(8)) {
            *lane = lane.wrapping_add(u64::from_be_bytes(chunk.try_into().expect("8 bytes")));
        }
    }
}

/// One row's values, decoded by the column types PostgreSQL gives (the same for both stores' rows).
fn row_values<'r, R>(row: &'r R, table: &Table) -> Result<Vec<Value>, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(match c.ty {
                ColumnType::Integer => Value::Integer(row.try_get(i)?),
                ColumnType::Bytes => Value::Bytes(row.try_get(i)?),
                ColumnType::Text => Value::Text(row.try_get(i)?),
            })
        })
        .collect()
}

/// Streams one table out of SQLite into multi-row INSERTs; returns the rows and their digest.
async fn copy_table(source: &mut SqliteConnection, target: &mut PgConnection, table: &Table) -> anyhow::Result<(u64, RowsDigest)> {
    let select = format!("SELECT {} FROM {}", table.column_list(), table.name);
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *source);
    let (mut count, mut digest) = (0u64, RowsDigest::default());
    let mut pending: Vec<Vec<Value>> = Vec::new();
    let mut pending_bytes = 0;
    while let Some(row) = rows.try_next().await? {
        let values = row_values(&row, table).with_context(|| format!("table {}: a value in the SQLite file does not have its column's type", table.name))?;
        digest.add(&values);
        count += 1;
        pending_bytes += values.iter().map(Value::size).sum::<usize>();
        pending.push(values);
        if pending.len() >= ROWS_PER_STATEMENT || pending_bytes >= BYTES_PER_STATEMENT {
            insert(target, table, std::mem::take(&mut pending)).await?;
            pending_bytes = 0;
        }
    }
    insert(target, table, pending).await?;
    Ok((count, digest))
}

async fn insert(target: &mut PgConnection, table: &Table, rows: Vec<Vec<Value>>) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Postgres>::new(format!("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE ", table.name, table.column_list()));
    q.push_values(rows, |mut b, row| {
        for v in row {
            match v {
                Value::Integer(i) => b.push_bind(i),
                Value::Bytes(x) => b.push_bind(x),
                Value::Text(t) => b.push_bind(t),
            };
        }
    });
    if table.name == "node_state" {
        // Its initial rows are there already (the migration inserts them).
        q.push(" ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value");
    }
    q.build().execute(&mut *target).await.with_context(|| format!("cannot insert into table {}", table.name))?;
    Ok(())
}

/// Reads a table back from PostgreSQL (inside the copy's transaction) and digests it.
async fn digest_postgres(target: &mut PgConnection, table: &Table) -> anyhow::Result<(u64, RowsDigest)> {
    let select = format!("SELECT {} FROM {}", table.column_list(), table.name);
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *target);
    let (mut count, mut digest) = (0u64, RowsDigest::default());
    while let Some(row) = rows.try_next().await? {
        let values = row_values(&row, table)?;
        digest.add(&values);
        count += 1;
    }
    Ok((count, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_row_order_but_not_content() {
        let row = |i: i64, t: &str| vec![Value::Integer(Some(i)), Value::Text(Some(t.into())), Value::Bytes(None)];
        let (mut a, mut b, mut c) = (RowsDigest::default(), RowsDigest::default(), RowsDigest::default());
        a.add(&row(1, "甲"));
        a.add(&row(2, "乙"));
        b.add(&row(2, "乙"));
        b.add(&row(1, "甲"));
        c.add(&row(1, "甲"));
        c.add(&row(2, "丙"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
