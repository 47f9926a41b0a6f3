//! Damaging a node's SQLite files the way a failing disk would, for corruption tests: bit flips in
//! a database page, and damage to the write-ahead log's valid frames (found with `wal::frames`, so
//! the damage is certain to hit frames SQLite would replay, not stale ones).

use std::os::unix::fs::FileExt;
use std::path::Path;

/// Flips `len` bytes at the start of the page in the middle of the database file (a page start is
/// a b-tree page header, an overflow chain pointer or a freelist entry: damage `quick_check` finds).
pub fn flip_middle_page(db: &Path, len: usize) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(db).expect("open the database file");
    let mut header = [0u8; 100];
    f.read_exact_at(&mut header, 0).expect("read the database header");
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => n as u64,
    };
    let pages = f.metadata().unwrap().len() / page_size;
    assert!(pages >= 4, "the database has only {pages} pages: nothing worth damaging");
    flip(&f, (pages / 2) * page_size, len);
}

/// Where to damage the WAL so that every transaction after the first one it holds is lost: the
/// offset of the first frame after its first commit frame. `None` if the WAL holds fewer than two
/// transactions.
pub fn wal_cut_after_first_commit(wal: &Path) -> Option<u64> {
    let frames = crate::wal::frames(wal).expect("read the WAL");
    let first_commit = frames.iter().position(|(_, commit)| *commit)?;
    let later_commits = frames[first_commit + 1..].iter().filter(|(_, c)| *c).count();
    (later_commits >= 1).then(|| frames[first_commit + 1].0)
}

/// Flips `len` bytes of the page data of the WAL frame at `frame` (its checksum no longer matches:
/// SQLite stops replaying there).
pub fn flip_wal_frame(wal: &Path, frame: u64, len: usize) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(wal).expect("open the WAL");
    flip(&f, frame + 24 + 100, len);
}

fn flip(f: &std::fs::File, at: u64, len: usize) {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, at).expect("read the bytes to flip");
    for b in &mut buf {
        *b ^= 0xff;
    }
    f.write_all_at(&buf, at).expect("write the flipped bytes");
    f.sync_all().expect("sync the damaged file");
}
