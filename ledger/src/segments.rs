//! Committed records, stored once: appended to segment files beside RocksDB
//! (docs/adr/0009).
//!
//! A segment is a file `<store>/segments/<first log index, 20 digits>.seg`
//! holding the canonical bytes of consecutive records back to back, nothing
//! else. The store's `spans` family says where each block's records lie (a
//! [`Span`]: segment, byte offset, each record's length), written in the
//! block's RocksDB batch. A block's records are appended and synced *before*
//! that batch, so a crash between the two leaves bytes past the last span's
//! end (or a segment no span names), never a span without its bytes;
//! [`Segments::open`] truncates and deletes what no span covers.
//!
//! A block never straddles two segments: a new segment begins when the open
//! one would grow past `StoreOptions::segment_bytes` (a block larger than
//! that gets a segment of its own).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Where one block's records lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The segment: the log index of its first record.
    pub segment: u64,
    /// Byte offset of the block's first record in the segment.
    pub offset: u64,
    /// Each record's length, in log order.
    pub lengths: Vec<u32>,
}

impl Span {
    /// Byte offset just past the block's last record.
    pub fn end(&self) -> u64 {
        self.offset + self.lengths.iter().map(|&l| u64::from(l)).sum::<u64>()
    }

    /// Big-endian segment, offset, then each length: 16 + 4 bytes per record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 4 * self.lengths.len());
        out.extend_from_slice(&self.segment.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        for l in &self.lengths {
            out.extend_from_slice(&l.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Span, Error> {
        if bytes.len() < 20 || !(bytes.len() - 16).is_multiple_of(4) {
            return Err(Error::Malformed {
                kind: "spans",
                detail: format!("a {}-byte span; one is 16 bytes and 4 per record, at least one record", bytes.len()),
            });
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let lengths = bytes[16..].chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes"))).collect();
        Ok(Span { segment: u64_at(0), offset: u64_at(8), lengths })
    }
}

struct Segment {
    /// Log index of its first record (its name).
    first: u64,
    file: File,
    /// Bytes of committed records in it (for the open segment, where the next block goes).
    len: u64,
    /// Bytes from its start whose page-cache copy was handed back ([`drop_cached`]).
    uncached: u64,
}

pub struct Segments {
    dir: PathBuf,
    /// Ordered by `first`; the last is the open one.
    files: Vec<Segment>,
    bytes_max: u64,
    sync: bool,
}

impl Segments {
    /// Opens `dir` (creating it) given the last committed block's span and the
    /// log index of its first record (`None` before any record): deletes the
    /// segments created after it and truncates its segment at its end.
    pub fn open(dir: &Path, last: Option<(u64, &Span)>, bytes_max: u64, sync: bool) -> Result<Segments, Error> {
        let err = |detail: String| Error::Store { path: dir.display().to_string(), detail };
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("creating the segments folder: {e}")))?;
            // The folder's own entry, so a commit's span never outlives it.
            if let Some(parent) = dir.parent().filter(|_| sync) {
                File::open(parent).and_then(|d| d.sync_all()).map_err(|e| err(format!("syncing its parent: {e}")))?;
            }
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| err(format!("listing: {e}")))? {
            let name = entry.map_err(|e| err(format!("listing: {e}")))?.file_name();
            let first = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| err(format!("{name:?} is not a segment (<first index, 20 digits>.seg)")))?;
            names.push(first);
        }
        names.sort_unstable();
        let keep_through = last.map(|(_, span)| span.segment);
        let mut files = Vec::new();
        let mut removed = false;
        for first in names {
            let path = segment_path(dir, first);
            if keep_through.is_none_or(|k| first > k) {
                // Created for a block whose batch never landed.
                std::fs::remove_file(&path).map_err(|e| err(format!("removing {}: {e}", path.display())))?;
                removed = true;
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| err(format!("opening {}: {e}", path.display())))?;
            let len = file.metadata().map_err(|e| err(format!("reading {}: {e}", path.display())))?.len();
            files.push(Segment { first, file, len, uncached: 0 });
        }
        if let Some((first_index, span)) = last {
            let seg = files.last_mut().filter(|s| s.first == span.segment).ok_or_else(|| {
                err(format!(
                    "segment {} holding the records from index {first_index} on is missing",
                    segment_path(dir, span.segment).display()
                ))
            })?;
            let end = span.end();
            if seg.len < end {
                return Err(err(format!(
                    "segment {} holds {} bytes; the committed records end at byte {end}",
                    segment_path(dir, seg.first).display(),
                    seg.len
                )));
            }
            if seg.len > end {
                // Appended for a block whose batch never landed.
                seg.file
                    .set_len(end)
                    .map_err(|e| err(format!("truncating {}: {e}", segment_path(dir, seg.first).display())))?;
                seg.file
                    .sync_all()
                    .map_err(|e| err(format!("syncing {}: {e}", segment_path(dir, seg.first).display())))?;
                seg.len = end;
            }
        }
        let segments = Segments { dir: dir.to_path_buf(), files, bytes_max, sync };
        if removed {
            segments.sync_dir()?;
        }
        Ok(segments)
    }

    /// Appends a block's records (the first at log index `first_index`) after
    /// the committed ones, synced when the store syncs, and returns their span.
    /// Nothing counts as committed until [`Segments::committed`]: a second
    /// append before it overwrites the first.
    pub fn append<R: AsRef<[u8]>>(&mut self, first_index: u64, records: &[R]) -> Result<Span, Error> {
        let block_bytes: u64 = records.iter().map(|r| r.as_ref().len() as u64).sum();
        let fits = self.files.last().is_some_and(|s| s.len == 0 || s.len + block_bytes <= self.bytes_max);
        if !fits {
            // An append whose batch failed may have left bytes past the
            // committed end; the open segment's next append would overwrite
            // them, but a closed one keeps them, so cut them first.
            if let Some(last) = self.files.last() {
                let cut = last.file.set_len(last.len).and_then(|()| match self.sync {
                    true => last.file.sync_all(),
                    false => Ok(()),
                });
                cut.map_err(|e| self.err(format!("cutting {}: {e}", segment_path(&self.dir, last.first).display())))?;
            }
            let path = segment_path(&self.dir, first_index);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| self.err(format!("creating {}: {e}", path.display())))?;
            if self.sync {
                self.sync_dir()?;
            }
            self.files.push(Segment { first: first_index, file, len: 0, uncached: 0 });
        }
        let seg = self.files.last().expect("a segment is open");
        let lengths = records
            .iter()
            .map(|r| {
                u32::try_from(r.as_ref().len()).map_err(|_| self.err(format!("a record of {} bytes", r.as_ref().len())))
            })
            .collect::<Result<Vec<u32>, Error>>()?;
        let path = || segment_path(&self.dir, seg.first);
        // Written from where the records lie, not gathered into one buffer first
        // (a copy of every record's bytes, 0.3 % of a validator at rate max).
        write_all_vectored_at(&seg.file, records, seg.len)
            .map_err(|e| self.err(format!("writing {}: {e}", path().display())))?;
        let span = Span { segment: seg.first, offset: seg.len, lengths };
        if self.sync {
            seg.file.sync_data().map_err(|e| self.err(format!("syncing {}: {e}", path().display())))?;
            let seg = self.files.last_mut().expect("a segment is open");
            drop_cached(&seg.file, seg.uncached..seg.len);
            seg.uncached = seg.len;
        }
        Ok(span)
    }

    /// Records that the batch naming `span` (the last append's) is written.
    pub fn committed(&mut self, span: &Span) {
        let seg = self.files.last_mut().expect("a segment is open");
        assert!(seg.first == span.segment && seg.len == span.offset, "the span of the last append");
        seg.len = span.end();
    }

    /// The records `range` of a span, each as its own buffer, read with one `pread`.
    pub fn read(&self, span: &Span, range: std::ops::Range<usize>) -> Result<Vec<Vec<u8>>, Error> {
        let lengths = span
            .lengths
            .get(range.clone())
            .ok_or_else(|| self.err(format!("records {range:?} of a span of {} records", span.lengths.len())))?;
        let seg =
            self.files.binary_search_by_key(&span.segment, |s| s.first).map(|i| &self.files[i]).map_err(|_| {
                self.err(format!("segment {} is missing", segment_path(&self.dir, span.segment).display()))
            })?;
        let skip: u64 = span.lengths[..range.start].iter().map(|&l| u64::from(l)).sum();
        let total: usize = lengths.iter().map(|&l| l as usize).sum();
        let mut bytes = vec![0u8; total];
        seg.file.read_exact_at(&mut bytes, span.offset + skip).map_err(|e| {
            self.err(format!(
                "reading {total} bytes at {} of {}: {e}",
                span.offset + skip,
                segment_path(&self.dir, seg.first).display()
            ))
        })?;
        let mut out = Vec::with_capacity(lengths.len());
        let mut at = 0;
        for &l in lengths {
            out.push(bytes[at..at + l as usize].to_vec());
            at += l as usize;
        }
        Ok(out)
    }

    /// Whether appends sync from now on; returns whether they did.
    pub fn set_sync(&mut self, sync: bool) -> bool {
        std::mem::replace(&mut self.sync, sync)
    }

    /// Syncs every segment's data and the folder (after appends made without sync).
    pub fn sync_all(&self) -> Result<(), Error> {
        for seg in &self.files {
            let path = segment_path(&self.dir, seg.first);
            seg.file.sync_data().map_err(|e| self.err(format!("syncing {}: {e}", path.display())))?;
        }
        self.sync_dir()
    }

    /// Bytes of committed records in every segment.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|s| s.len).sum()
    }

    fn sync_dir(&self) -> Result<(), Error> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err(format!("syncing the segments folder: {e}")))
    }

    fn err(&self, detail: String) -> Error {
        Error::Store { path: self.dir.display().to_string(), detail }
    }
}

/// Hands the page cache's copy of `file`'s bytes `range` (synced, so clean)
/// back to the kernel. Every block's records are written once and seldom read
/// again soon (recent blocks are served from memory), so their pages would
/// only pile up in the cache while each append took fresh ones. On a VM whose
/// balloon reports free memory to the host (this bench machine), a fresh page
/// faults in on the host as well: copying a block into fresh pages ran at
/// 1.4 GB/s against 3.9 into pages just freed, and handing the last block's
/// pages back before the next append made a validator's writes into the page
/// cache 7.8 % → 5.5 % of its time at rate max (docs/BENCHMARKS.md, session
/// 27). Only advice: an error changes nothing but the cache, so none is
/// reported. Pages read back later are cached as any read is.
fn drop_cached(file: &File, range: std::ops::Range<u64>) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(range.start), i64::try_from(range.end.saturating_sub(range.start)))
    else {
        return;
    };
    if len > 0 {
        // SAFETY: posix_fadvise reads no memory of ours; the descriptor is open for `file`'s lifetime.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Writes `records` back to back at `offset` of `file`, from where they lie:
/// `writev` (at most `IOV_MAX` slices a call) after one seek; the file's
/// cursor is used by nothing else (reads are positional).
fn write_all_vectored_at<R: AsRef<[u8]>>(file: &File, records: &[R], offset: u64) -> std::io::Result<()> {
    use std::io::{ErrorKind, IoSlice, Seek, SeekFrom, Write};
    let mut slices: Vec<IoSlice<'_>> =
        records.iter().map(|r| r.as_ref()).filter(|r| !r.is_empty()).map(IoSlice::new).collect();
    let mut rest = &mut slices[..];
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_len(dir: &Path, first: u64) -> u64 {
        std::fs::metadata(segment_path(dir, first)).unwrap().len()
    }

    /// Goal: bytes of an append whose batch never landed do not stay in a
    /// segment that is closed by the next block's rollover.
    #[test]
    fn a_rollover_cuts_an_uncommitted_append_from_the_closed_segment() {
        let dir = std::env::temp_dir().join(format!("annal-segments-rollover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut segments = Segments::open(&dir, None, 250, false).unwrap();
        let a = segments.append(0, &[[1u8; 100]]).unwrap();
        segments.committed(&a);
        // Block 2's append lands in the file, its batch does not.
        let lost = segments.append(1, &[[2u8; 100]]).unwrap();
        assert_eq!((lost.segment, lost.offset), (0, 100));
        assert_eq!(file_len(&dir, 0), 200);
        // Block 2 again, larger this time: it no longer fits and opens segment 1.
        let b = segments.append(1, &[[3u8; 200]]).unwrap();
        segments.committed(&b);
        assert_eq!((b.segment, b.offset), (1, 0));
        assert_eq!(file_len(&dir, 0), 100, "the closed segment holds only its committed bytes");
        assert_eq!(segments.bytes(), 300);
        assert_eq!(segments.read(&a, 0..1).unwrap(), vec![vec![1u8; 100]]);
        assert_eq!(segments.read(&b, 0..1).unwrap(), vec![vec![3u8; 200]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Which of `path`'s pages are in the page cache (`mincore` over a mapping of it).
    fn resident_pages(path: &Path) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let mut pages = vec![0u8; len.div_ceil(page_size())];
        // SAFETY: the mapping is read by no one (mincore only asks the kernel)
        // and unmapped before `file` closes; `pages` has a byte per page.
        unsafe {
            let map = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
            assert_ne!(map, libc::MAP_FAILED);
            assert_eq!(libc::mincore(map, len, pages.as_mut_ptr()), 0);
            libc::munmap(map, len);
        }
        pages.iter().map(|p| p & 1 == 1).collect()
    }

    fn on_tmpfs(dir: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: `path` is a NUL-terminated string; `fs` is written by statfs.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut fs) }, 0);
        fs.f_type == libc::TMPFS_MAGIC
    }

    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    /// Goal: a synced append hands the page cache's copy of the blocks before
    /// it back to the kernel and keeps the latest one's; the records still
    /// read back. Without syncing (pages not yet written out) nothing is dropped.
    #[test]
    fn synced_appends_hand_back_the_pages_of_the_blocks_before() {
        let dir = std::env::temp_dir().join(format!("annal-segments-uncached-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if on_tmpfs(&dir) {
            // tmpfs pages have no disk to go back to: the advice cannot drop them.
            eprintln!("skipped: {} is on tmpfs, where pages cannot be handed back", dir.display());
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        }
        let page = page_size();
        let mut segments = Segments::open(&dir, None, 1 << 30, true).unwrap();
        let a = segments.append(0, &[vec![1u8; 16 * page]]).unwrap();
        segments.committed(&a);
        let b = segments.append(1, &[vec![2u8; 8 * page]]).unwrap();
        segments.committed(&b);
        let resident = resident_pages(&segment_path(&dir, 0));
        assert_eq!(resident.len(), 24);
        assert!(resident[..16].iter().all(|r| !r), "the first block's pages were handed back: {resident:?}");
        assert!(resident[16..].iter().all(|r| *r), "the latest block's stay: {resident:?}");
        assert_eq!(segments.read(&a, 0..1).unwrap(), vec![vec![1u8; 16 * page]]);

        segments.set_sync(false);
        let c = segments.append(2, &[vec![3u8; 8 * page]]).unwrap();
        segments.committed(&c);
        let resident = resident_pages(&segment_path(&dir, 0));
        assert!(resident[16..].iter().all(|r| *r), "unsynced, nothing is dropped: {resident:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Goal: a block of more records than one `writev` takes (`IOV_MAX`,
    /// 1,024 on Linux), of assorted lengths, lands whole and in order after
    /// the block before it, and reads back record by record.
    #[test]
    fn a_block_of_more_records_than_one_writev_takes_lands_whole() {
        let dir = std::env::temp_dir().join(format!("annal-segments-writev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut segments = Segments::open(&dir, None, 1 << 30, false).unwrap();
        let first = segments.append(0, &[vec![7u8; 33]]).unwrap();
        segments.committed(&first);
        let records: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; 1 + (i as usize * 7) % 600]).collect();
        let span = segments.append(1, &records).unwrap();
        segments.committed(&span);
        assert_eq!((span.segment, span.offset), (0, 33));
        let total: u64 = 33 + records.iter().map(|r| r.len() as u64).sum::<u64>();
        assert_eq!(file_len(&dir, 0), total);
        assert_eq!(segments.read(&span, 0..records.len()).unwrap(), records);
        assert_eq!(segments.read(&first, 0..1).unwrap(), vec![vec![7u8; 33]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
