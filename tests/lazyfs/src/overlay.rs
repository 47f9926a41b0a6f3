//! The unsynced state of one file: what a power cut loses.
//!
//! Between two fsyncs, a file's writes and size changes live only here, in whole 4 KiB pages over
//! the untouched backing file. Readers see the merge; an fsync writes the merge to the backing file
//! and forgets the overlay; a power cut (the process dies) forgets it without writing anything.
//! Whole pages keep the bookkeeping simple and bound memory by the file's size however often the
//! same bytes are rewritten (SQLite's `-shm` is rewritten constantly and never fsynced).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Granularity of the overlay.
pub const PAGE: u64 = 4096;

/// What one file's writes changed since its last fsync, in memory only.
///
/// Invariant: `visible <= size`, and no page lies wholly at or past `size`. The backing file does
/// not change while an overlay exists: only [`Overlay::write_back`] writes to it.
#[derive(Debug)]
pub struct Overlay {
    /// The file's size as readers see it.
    size: u64,
    /// The backing file's length when the overlay began.
    backing_len: u64,
    /// How much of the backing file is still visible: a truncation hides what lies past it, even
    /// when the file grows again (those bytes then read as zeros, as on any filesystem).
    visible: u64,
    /// Pages written since the last fsync, by page index, each with its whole current content.
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    /// An overlay with no changes yet over a backing file of `backing_len` bytes.
    pub fn new(backing_len: u64) -> Overlay {
        Overlay { size: backing_len, backing_len, visible: backing_len, pages: BTreeMap::new() }
    }

    /// The size readers see.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held in memory.
    #[cfg(test)]
    pub fn held_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// Records a write of `data` at `offset`. Pages only partly written start from what readers
    /// saw before, read from `backing`.
    pub fn write(&mut self, backing: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, within) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE as usize - within).min(data.len() - done);
            if !self.pages.contains_key(&index) {
                let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
                if n < PAGE as usize {
                    self.read_base(backing, index * PAGE, &mut page)?;
                }
                self.pages.insert(index, page);
            }
            let page = self.pages.get_mut(&index).expect("inserted above");
            page[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.size = self.size.max(offset + data.len() as u64);
        Ok(())
    }

    /// Sets the size readers see; bytes past it are gone, and read as zeros if the file grows again.
    pub fn truncate(&mut self, len: u64) {
        self.size = len;
        self.visible = self.visible.min(len);
        drop(self.pages.split_off(&len.div_ceil(PAGE)));
        if !len.is_multiple_of(PAGE)
            && let Some(page) = self.pages.get_mut(&(len / PAGE))
        {
            page[(len % PAGE) as usize..].fill(0);
        }
    }

    /// Reads up to `len` bytes at `offset`, as readers see them (short at the end of the file).
    pub fn read(&self, backing: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset >= self.size || len == 0 {
            return Ok(Vec::new());
        }
        let end = self.size.min(offset + len as u64);
        let mut buf = vec![0u8; (end - offset) as usize];
        self.read_base(backing, offset, &mut buf)?;
        for (&index, page) in self.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let start = (index * PAGE).max(offset);
            let stop = ((index + 1) * PAGE).min(end);
            let from = (start - index * PAGE) as usize..(stop - index * PAGE) as usize;
            buf[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(&page[from]);
        }
        Ok(buf)
    }

    /// Writes the merged content to `backing` (the caller then fsyncs it and drops the overlay).
    pub fn write_back(&self, backing: &File) -> io::Result<()> {
        if self.visible < self.backing_len {
            backing.set_len(self.visible)?;
        }
        for (&index, page) in &self.pages {
            let start = index * PAGE;
            let n = PAGE.min(self.size - start) as usize;
            backing.write_all_at(&page[..n], start)?;
        }
        backing.set_len(self.size)
    }

    /// Fills `buf` with the backing file's visible bytes at `offset`, zeros past them.
    fn read_base(&self, backing: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        let avail = self.visible.saturating_sub(offset).min(buf.len() as u64) as usize;
        read_full_at(backing, &mut buf[..avail], offset).map(drop)
    }
}

/// Reads as much of `buf` as the file holds at `offset` (the rest stays as it was); returns how much.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing(content: &[u8]) -> File {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(content, 0).unwrap();
        f
    }

    fn whole(o: &Overlay, f: &File) -> Vec<u8> {
        o.read(f, 0, o.size() as usize + 10).unwrap()
    }

    #[test]
    fn writes_are_seen_but_not_on_the_backing_file_until_written_back() {
        let f = backing(b"hello world");
        let mut o = Overlay::new(11);
        o.write(&f, 6, b"there, friend").unwrap();
        assert_eq!(whole(&o, &f), b"hello there, friend");
        assert_eq!(o.read(&f, 3, 5).unwrap(), b"lo th");
        assert_eq!(std::fs::read(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f))).unwrap(), b"hello world");
        o.write_back(&f).unwrap();
        let mut all = vec![0; 19];
        read_full_at(&f, &mut all, 0).unwrap();
        assert_eq!(all, b"hello there, friend");
    }

    #[test]
    fn writes_across_pages_and_past_the_end_leave_zeros_in_holes() {
        let f = backing(&[7u8; 5000]);
        let mut o = Overlay::new(5000);
        o.write(&f, 4090, &[1u8; 10]).unwrap();
        o.write(&f, 3 * PAGE + 1, b"x").unwrap();
        let got = whole(&o, &f);
        assert_eq!(got.len() as u64, 3 * PAGE + 2);
        assert!(got[..4090].iter().all(|&b| b == 7));
        assert!(got[4090..4100].iter().all(|&b| b == 1));
        assert!(got[4100..5000].iter().all(|&b| b == 7));
        assert!(got[5000..3 * PAGE as usize + 1].iter().all(|&b| b == 0));
        assert_eq!(got[3 * PAGE as usize + 1], b'x');
        o.write_back(&f).unwrap();
        let mut back = vec![0; got.len()];
        read_full_at(&f, &mut back, 0).unwrap();
        assert_eq!(back, got);
        assert_eq!(f.metadata().unwrap().len(), got.len() as u64);
    }

    #[test]
    fn a_truncation_hides_the_old_tail_even_after_regrowth() {
        let f = backing(&[9u8; 10000]);
        let mut o = Overlay::new(10000);
        o.write(&f, 100, b"abc").unwrap();
        o.truncate(101);
        assert_eq!(o.size(), 101);
        o.truncate(8000);
        let got = whole(&o, &f);
        assert_eq!(got.len(), 8000);
        assert!(got[..100].iter().all(|&b| b == 9));
        assert_eq!(got[100], b'a');
        assert!(got[101..].iter().all(|&b| b == 0), "bytes past a truncation read as zeros");
        o.write_back(&f).unwrap();
        let mut back = vec![1; 8000];
        read_full_at(&f, &mut back, 0).unwrap();
        assert_eq!(back, got);
        assert_eq!(f.metadata().unwrap().len(), 8000);
    }

    #[test]
    fn rewriting_the_same_bytes_holds_one_page() {
        let f = backing(&[]);
        let mut o = Overlay::new(0);
        for i in 0..1000u32 {
            o.write(&f, 8, &i.to_le_bytes()).unwrap();
        }
        assert_eq!(o.held_bytes(), PAGE);
        assert_eq!(o.read(&f, 8, 4).unwrap(), 999u32.to_le_bytes());
    }
}
