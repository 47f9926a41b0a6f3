//! Reading a SQLite write-ahead log the way SQLite's recovery does, to tell whether a process was
//! stopped in the middle of writing a transaction (file format: <https://sqlite.org/fileformat.html#the_write_ahead_log>).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// What the WAL holds, counted as SQLite's recovery would: frames of the current generation (same
/// salts as the header), and how many of them come after the last commit frame (a transaction
/// being written, which recovery will drop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalState {
    pub frames: usize,
    pub uncommitted: usize,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The frames of the current generation in the WAL at `path`, as SQLite's recovery walks them
/// (same salts as the header): the offset of each frame header, and whether the frame ends a
/// transaction. A missing or empty file is an empty log.
pub fn frames(path: &Path) -> std::io::Result<Vec<(u64, bool)>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut header = [0u8; 32];
    if len < 32 {
        return Ok(Vec::new());
    }
    f.read_exact(&mut header)?;
    let page_size = be32(&header[8..12]) as u64;
    let salts = (be32(&header[16..20]), be32(&header[20..24]));
    if !(512..=65536).contains(&page_size) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut frame = [0u8; 24];
    let mut at = 32u64;
    while at + 24 <= len {
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut frame)?;
        if (be32(&frame[8..12]), be32(&frame[12..16])) != salts {
            break;
        }
        out.push((at, be32(&frame[4..8]) != 0));
        at += 24 + page_size;
    }
    Ok(out)
}

/// Counts the frames of the WAL at `path` (see [`frames`]).
pub fn state(path: &Path) -> std::io::Result<WalState> {
    let frames = frames(path)?;
    let last_commit = frames.iter().rposition(|(_, commit)| *commit).map_or(0, |i| i + 1);
    Ok(WalState { frames: frames.len(), uncommitted: frames.len() - last_commit })
}
