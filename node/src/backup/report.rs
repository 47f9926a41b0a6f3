//! The reconciliation's files in `data_dir/reconciliation/`: `due.json` (written by the restore,
//! removed when every neighbour has answered), `report.json` (the summary, rewritten as neighbours
//! answer) and `entries/<neighbour>.jsonl` (one line per message listed, appended page by page, so a report of
//! millions of messages never sits in memory). They are outside the database on purpose: they
//! describe what the database lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use exchange_wire::NodeId;
use exchange_wire::backup::{ReconcileEntry, ReconciliationReport};
use serde::{Deserialize, Serialize};

use super::files;

/// The folder's name inside `data_dir`.
pub const FOLDER: &str = "reconciliation";

/// A reconciliation the restore asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Due {
    pub node: NodeId,
    pub backup_folder: String,
    pub backup_taken_at_ms: u64,
    pub restored_at_ms: u64,
    /// Where the data the restore replaced was moved.
    pub previous_data: String,
    /// The node's first start after the restore: the end of the window asked about. Set once.
    #[serde(default)]
    pub first_start_ms: Option<u64>,
}

fn folder(data_dir: &Path) -> PathBuf {
    data_dir.join(FOLDER)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| io::Error::other(format!("{} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The reconciliation due, if any.
pub fn due(data_dir: &Path) -> io::Result<Option<Due>> {
    read_json(&folder(data_dir).join("due.json"))
}

/// Records a reconciliation as due (durably).
pub fn write_due(data_dir: &Path, due: &Due) -> io::Result<()> {
    files::create_private_dir(&folder(data_dir))?;
    files::write_json_atomic(&folder(data_dir).join("due.json"), due)
}

/// Marks the reconciliation as no longer due.
pub fn clear_due(data_dir: &Path) -> io::Result<()> {
    fs::remove_file(folder(data_dir).join("due.json"))?;
    files::sync_dir(&folder(data_dir))
}

/// The last report written, if any.
pub fn read_report(data_dir: &Path) -> io::Result<Option<ReconciliationReport>> {
    read_json(&folder(data_dir).join("report.json"))
}

/// Replaces the report (atomically).
pub fn write_report(data_dir: &Path, report: &ReconciliationReport) -> io::Result<()> {
    files::create_private_dir(&folder(data_dir))?;
    files::write_json_atomic(&folder(data_dir).join("report.json"), report)
}

/// The entries of one neighbour, `entries/<node>.jsonl`: written afresh by each attempt to
/// reconcile with it, so an attempt cut short never leaves its entries twice.
pub struct EntryWriter {
    file: BufWriter<File>,
}

fn entries_folder(data_dir: &Path) -> PathBuf {
    folder(data_dir).join("entries")
}

/// Removes the entries of an earlier run (a reconciliation run again after a restart lists
/// everything again).
pub fn clear_entries(data_dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(entries_folder(data_dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl EntryWriter {
    /// Starts the entries of `neighbour` empty.
    pub fn create(data_dir: &Path, neighbour: &NodeId) -> io::Result<EntryWriter> {
        files::create_private_dir(&entries_folder(data_dir))?;
        let path = entries_folder(data_dir).join(format!("{neighbour}.jsonl"));
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
        Ok(EntryWriter { file: BufWriter::new(file) })
    }

    pub fn append(&mut self, entries: &[ReconcileEntry]) -> io::Result<()> {
        for e in entries {
            serde_json::to_writer(&mut self.file, e).map_err(io::Error::other)?;
            self.file.write_all(b"\n")?;
        }
        self.file.flush()
    }

    /// Makes what was appended durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()
    }
}

/// Up to `limit` entries after the first `after` (neighbours in name order), read in a stream; and
/// the position after them.
pub fn read_entries(data_dir: &Path, after: u64, limit: u32) -> io::Result<(Vec<ReconcileEntry>, u64)> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(entries_folder(data_dir)) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), after)),
        Err(e) => return Err(e),
    };
    paths.sort();
    let mut out = Vec::new();
    let mut position = 0u64;
    'files: for path in paths {
        for line in BufReader::new(File::open(path)?).lines() {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            position += 1;
            if position <= after {
                continue;
            }
            // A line being appended right now may be incomplete: stop before it.
            let Ok(entry) = serde_json::from_str(&line) else { break 'files };
            out.push(entry);
            if out.len() as u32 >= limit {
                break 'files;
            }
        }
    }
    let next = after + out.len() as u64;
    Ok((out, next))
}
