//! Segments: one `.log` file of batches plus its two indexes.
//!
//! [`ActiveSegment`] is the only type with write methods; sealing consumes it and yields
//! a [`SealedSegment`], so nothing can append to sealed data by mistake. Both share
//! [`SegmentData`] for reads.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{BrokerError, Result};

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::index::{
    self, IndexBuilder, OffsetEntry, TimeEntry, lookup_offset, lookup_time, parse_offset_index,
    parse_time_index,
};
use super::{ReadSlice, RecoveryReport};

/// Path of a segment's data file: `<dir>/<20-digit base>.log`.
pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
/// Path of a segment's offset index.
pub(crate) fn index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
/// Path of a segment's time index.
pub(crate) fn time_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Removes a segment's three files (data first, so a crash leaves only orphan indexes,
/// which open() removes).
pub(crate) fn delete_files(dir: &Path, base: i64) -> Result<()> {
    for p in [
        log_path(dir, base),
        index_path(dir, base),
        time_index_path(dir, base),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(BrokerError::io(p, e)),
        }
    }
    Ok(())
}

/// Suffix of segment files taken out of the log but not yet unlinked.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

/// Takes a segment out of the log by renaming its files to `*.deleted` (cheap), so the
/// slow unlink of a big file can happen outside the caller's lock. Returns the new paths.
pub(crate) fn mark_deleted(dir: &Path, base: i64) -> Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(3);
    for p in [
        log_path(dir, base),
        index_path(dir, base),
        time_index_path(dir, base),
    ] {
        let mut to = p.clone().into_os_string();
        to.push(DELETED_SUFFIX);
        let to = PathBuf::from(to);
        match std::fs::rename(&p, &to) {
            Ok(()) => out.push(to),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(BrokerError::io(p, e)),
        }
    }
    Ok(out)
}

fn read_file_or_none(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::io(path, e)),
    }
}

fn write_whole(path: &Path, bytes: &[u8]) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| BrokerError::io(path, e))?;
    f.write_all_at(bytes, 0)
        .map_err(|e| BrokerError::io(path, e))?;
    Ok(f)
}

fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| BrokerError::io(path, e))
}

/// What both segment kinds share: the data file, its size and the in-memory indexes.
#[derive(Debug)]
pub(crate) struct SegmentData {
    pub base: i64,
    pub path: PathBuf,
    file: File,
    pub size: u64,
    pub idx: IndexBuilder,
}

impl SegmentData {
    fn corrupt(&self, position: u64, reason: impl Into<String>) -> BrokerError {
        BrokerError::Corrupt {
            path: self.path.clone(),
            position,
            reason: reason.into(),
        }
    }

    fn read_exact(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, pos)
            .map_err(|e| BrokerError::io(&self.path, e))?;
        Ok(buf)
    }

    /// The header of the stored batch at `pos`, or None at the end of the data.
    fn header_at(&self, pos: u64) -> Result<Option<BatchHeader>> {
        if pos >= self.size {
            return Ok(None);
        }
        if pos + HEADER_LEN as u64 > self.size {
            return Err(self.corrupt(pos, "partial batch header at the end of the segment"));
        }
        let buf = self.read_exact(pos, HEADER_LEN)?;
        let h = BatchHeader::parse(&buf).map_err(|r| self.corrupt(pos, r))?;
        h.check_shape().map_err(|r| self.corrupt(pos, r))?;
        Ok(Some(h))
    }

    /// The first stored batch whose last offset is `>= offset`, with its position.
    pub(crate) fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        let rel = (offset - self.base).clamp(0, i64::from(u32::MAX)) as u32;
        let mut pos = u64::from(lookup_offset(&self.idx.offsets, rel).pos);
        while let Some(h) = self.header_at(pos)? {
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Whole batches starting with `first` at `pos`, as many as fit in `max_bytes` (at
    /// least `first`), in one positional read.
    pub(crate) fn read_from(
        &self,
        pos: u64,
        first: BatchHeader,
        max_bytes: usize,
    ) -> Result<ReadSlice> {
        let avail = (self.size - pos) as usize;
        let want = max_bytes.min(avail).max(first.total_len());
        let mut buf = self.read_exact(pos, want)?;
        let mut cut = first.total_len();
        let mut next = first.last_offset() + 1;
        while cut + HEADER_LEN <= buf.len() {
            let h =
                BatchHeader::parse(&buf[cut..]).map_err(|r| self.corrupt(pos + cut as u64, r))?;
            let len = h
                .check_shape()
                .map_err(|r| self.corrupt(pos + cut as u64, r))?;
            if cut + len > buf.len() {
                break;
            }
            cut += len;
            next = h.last_offset() + 1;
        }
        buf.truncate(cut);
        Ok(ReadSlice {
            bytes: bytes::Bytes::from(buf),
            first_offset: first.base_offset,
            next_offset: next,
        })
    }

    /// The stored bytes of the batch whose base offset is exactly `base`, if any.
    pub(crate) fn batch_bytes_at(&self, base: i64) -> Result<Option<Vec<u8>>> {
        match self.find_batch(base)? {
            Some((pos, h)) if h.base_offset == base => {
                Ok(Some(self.read_exact(pos, h.total_len())?))
            }
            _ => Ok(None),
        }
    }

    /// The first batch whose max timestamp is `>= ts`: `(base offset, max timestamp)`.
    pub(crate) fn find_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        if self.idx.max_ts < ts {
            return Ok(None);
        }
        let mut pos = match lookup_time(&self.idx.times, ts) {
            Some(t) => u64::from(lookup_offset(&self.idx.offsets, t.rel).pos),
            None => 0,
        };
        while let Some(h) = self.header_at(pos)? {
            if h.max_timestamp >= ts {
                return Ok(Some((h.base_offset, h.max_timestamp)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Largest max timestamp in the segment (`i64::MIN` when empty).
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.idx.max_ts
    }
}

/// Scans batches from `pos`, feeding them to `idx`, until the end of the file or the
/// first invalid batch. Returns the end of the valid data and, if it stopped early, why.
fn scan(
    file: &File,
    path: &Path,
    base: i64,
    mut pos: u64,
    size: u64,
    idx: &mut IndexBuilder,
) -> Result<(u64, Option<String>)> {
    let mut buf = Vec::new();
    while pos < size {
        if size - pos < HEADER_LEN as u64 {
            return Ok((
                pos,
                Some(format!("{} bytes of a torn batch header", size - pos)),
            ));
        }
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, pos)
            .map_err(|e| BrokerError::io(path, e))?;
        let h = match BatchHeader::parse(&head).and_then(|h| h.check_shape().map(|_| h)) {
            Ok(h) => h,
            Err(r) => return Ok((pos, Some(r))),
        };
        let len = h.total_len() as u64;
        if pos + len > size {
            return Ok((
                pos,
                Some(format!(
                    "batch of {len} bytes is torn: only {} bytes present",
                    size - pos
                )),
            ));
        }
        buf.resize(len as usize, 0);
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| BrokerError::io(path, e))?;
        if let Err(r) = batch::validate_batch(&buf) {
            return Ok((pos, Some(r)));
        }
        let rel = h.base_offset - base;
        if rel < 0 || h.last_offset() - base > i64::from(u32::MAX) {
            return Ok((
                pos,
                Some(format!(
                    "batch base offset {} does not belong to segment {base}",
                    h.base_offset
                )),
            ));
        }
        if let Some(next) = idx.next_offset
            && h.base_offset < next
        {
            return Ok((
                pos,
                Some(format!(
                    "batch base offset {} goes backwards (expected >= {next})",
                    h.base_offset
                )),
            ));
        }
        idx.on_batch(
            rel as u32,
            pos as u32,
            len,
            h.max_timestamp,
            h.last_offset(),
        );
        pos += len;
    }
    Ok((pos, None))
}

/// Cuts `file` to `valid_end`, logging what was dropped.
fn drop_tail(
    file: &File,
    path: &Path,
    valid_end: u64,
    size: u64,
    offset: Option<i64>,
    why: &str,
) -> Result<u64> {
    let dropped = size - valid_end;
    tracing::warn!(
        file = %path.display(),
        position = valid_end,
        bytes_dropped = dropped,
        next_offset = offset,
        reason = why,
        "truncating torn or corrupt segment tail"
    );
    file.set_len(valid_end)
        .map_err(|e| BrokerError::io(path, e))?;
    Ok(dropped)
}

/// A segment that is no longer written. Its indexes are trusted at open when consistent.
#[derive(Debug)]
pub(crate) struct SealedSegment {
    pub data: SegmentData,
}

impl SealedSegment {
    /// Opens a sealed segment, rebuilding its indexes when missing or inconsistent.
    pub(crate) fn open(
        dir: &Path,
        base: i64,
        interval: u32,
        report: &mut RecoveryReport,
    ) -> Result<Self> {
        let path = log_path(dir, base);
        let file = open_rw(&path, false)?;
        let mut size = file
            .metadata()
            .map_err(|e| BrokerError::io(&path, e))?
            .len();
        let ipath = index_path(dir, base);
        let tpath = time_index_path(dir, base);
        let offsets = read_file_or_none(&ipath)?.map(|b| parse_offset_index(&b, size));
        let times = read_file_or_none(&tpath)?.map(|b| parse_time_index(&b));
        let idx = match (offsets, times) {
            (Some((o, None)), Some((t, None))) if size == 0 || !t.is_empty() => {
                let mut idx = IndexBuilder::resume(interval, o, Vec::new());
                idx.times = t;
                idx.max_ts = idx.times.last().map_or(i64::MIN, |t| t.ts);
                idx
            }
            (o, t) => {
                let why = match (&o, &t) {
                    (None, _) => "offset index missing".to_string(),
                    (_, None) => "time index missing".to_string(),
                    (Some((_, Some(r))), _) => format!("offset index: {r}"),
                    (_, Some((_, Some(r)))) => format!("time index: {r}"),
                    _ => "time index empty for a non-empty segment".to_string(),
                };
                tracing::warn!(file = %path.display(), reason = %why, "rebuilding segment indexes");
                let mut idx = IndexBuilder::new(interval);
                let (end, problem) = scan(&file, &path, base, 0, size, &mut idx)?;
                if let Some(why) = problem {
                    report.truncated_bytes +=
                        drop_tail(&file, &path, end, size, idx.next_offset, &why)?;
                    size = end;
                }
                idx.finish();
                write_whole(&ipath, &idx.offset_bytes())?;
                write_whole(&tpath, &idx.time_bytes())?;
                report.rebuilt_indexes += 1;
                idx
            }
        };
        Ok(SealedSegment {
            data: SegmentData {
                base,
                path,
                file,
                size,
                idx,
            },
        })
    }
}

/// The one segment being written: data file plus index files open for appending.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub data: SegmentData,
    dir: PathBuf,
    index_file: File,
    time_file: File,
    /// When this segment was created or reopened; the age roll counts from here.
    pub created: SystemTime,
}

impl ActiveSegment {
    /// Creates a fresh, empty segment at `base` (replacing leftover files of that name).
    pub(crate) fn create(dir: &Path, base: i64, interval: u32) -> Result<Self> {
        let path = log_path(dir, base);
        let file = write_whole(&path, &[])?;
        Ok(ActiveSegment {
            index_file: write_whole(&index_path(dir, base), &[])?,
            time_file: write_whole(&time_index_path(dir, base), &[])?,
            dir: dir.to_path_buf(),
            created: SystemTime::now(),
            data: SegmentData {
                base,
                path,
                file,
                size: 0,
                idx: IndexBuilder::new(interval),
            },
        })
    }

    /// Opens the last segment after a stop or crash: resumes from the last index entry
    /// that points at a valid batch, validates every batch after it (length, magic,
    /// CRC), cuts a torn or corrupt tail and rewrites both indexes.
    pub(crate) fn recover(
        dir: &Path,
        base: i64,
        interval: u32,
        report: &mut RecoveryReport,
    ) -> Result<Self> {
        let path = log_path(dir, base);
        let file = open_rw(&path, true)?;
        let size = file
            .metadata()
            .map_err(|e| BrokerError::io(&path, e))?
            .len();
        let ipath = index_path(dir, base);
        let tpath = time_index_path(dir, base);
        let (mut offsets, mut rebuilt) = match read_file_or_none(&ipath)? {
            Some(b) => {
                let (o, err) = parse_offset_index(&b, size);
                (o, err.is_some())
            }
            None => (Vec::new(), size > 0),
        };
        let (times, terr) = match read_file_or_none(&tpath)? {
            Some(b) => {
                let (t, err) = parse_time_index(&b);
                (t, err.is_some())
            }
            None => (Vec::new(), size > 0),
        };
        rebuilt |= terr;
        // The last entry that points at a whole, valid batch is where scanning starts.
        let start = loop {
            let Some(e) = offsets.last().copied() else {
                break 0u64;
            };
            if valid_batch_at(&file, &path, u64::from(e.pos), size)? {
                break u64::from(e.pos);
            }
            offsets.pop();
            rebuilt = true;
        };
        let mut idx = if offsets.is_empty() {
            IndexBuilder::new(interval)
        } else {
            IndexBuilder::resume(interval, offsets, times)
        };
        let (end, problem) = scan(&file, &path, base, start, size, &mut idx)?;
        if let Some(why) = problem {
            report.truncated_bytes += drop_tail(&file, &path, end, size, idx.next_offset, &why)?;
        }
        if rebuilt {
            tracing::warn!(file = %path.display(), "rebuilt indexes of the active segment");
            report.rebuilt_indexes += 1;
        }
        Ok(ActiveSegment {
            index_file: write_whole(&ipath, &idx.offset_bytes())?,
            time_file: write_whole(&tpath, &idx.time_bytes())?,
            dir: dir.to_path_buf(),
            created: SystemTime::now(),
            data: SegmentData {
                base,
                path,
                file,
                size: end,
                idx,
            },
        })
    }

    /// The offset the next batch may take at the earliest.
    pub(crate) fn next_offset(&self) -> i64 {
        self.data.idx.next_offset.unwrap_or(self.data.base)
    }

    /// Writes a run of validated batches (`bytes`, with their headers and lengths) in
    /// one write, then indexes them. On a write error the file is cut back.
    pub(crate) fn append_run(&mut self, bytes: &[u8], headers: &[BatchHeader]) -> Result<u64> {
        let start = self.data.size;
        if let Err(e) = self.data.file.write_all_at(bytes, start) {
            let _ = self.data.file.set_len(start);
            return Err(BrokerError::io(&self.data.path, e));
        }
        self.data.size += bytes.len() as u64;
        let mut pos = start;
        let (o0, t0) = (self.data.idx.offsets.len(), self.data.idx.times.len());
        for h in headers {
            let len = h.total_len() as u64;
            self.data.idx.on_batch(
                (h.base_offset - self.data.base) as u32,
                pos as u32,
                len,
                h.max_timestamp,
                h.last_offset(),
            );
            pos += len;
        }
        self.write_new_entries(o0, t0)?;
        Ok(start)
    }

    fn write_new_entries(&mut self, o0: usize, t0: usize) -> Result<()> {
        let idx = &self.data.idx;
        if idx.offsets.len() > o0 {
            let b: Vec<u8> = idx.offsets[o0..]
                .iter()
                .flat_map(OffsetEntry::encode)
                .collect();
            self.index_file
                .write_all_at(&b, (o0 * index::OFFSET_ENTRY_LEN) as u64)
                .map_err(|e| BrokerError::io(index_path(&self.dir, self.data.base), e))?;
        }
        if idx.times.len() > t0 {
            let b: Vec<u8> = idx.times[t0..].iter().flat_map(TimeEntry::encode).collect();
            self.time_file
                .write_all_at(&b, (t0 * index::TIME_ENTRY_LEN) as u64)
                .map_err(|e| BrokerError::io(time_index_path(&self.dir, self.data.base), e))?;
        }
        Ok(())
    }

    /// Makes the appended data durable (fdatasync of the data file; indexes are
    /// rebuilt from data at recovery, so they need no sync here).
    pub(crate) fn sync(&self) -> Result<()> {
        self.data
            .file
            .sync_data()
            .map_err(|e| BrokerError::io(&self.data.path, e))
    }

    /// First half of sealing, done before the next segment exists: records the final
    /// max timestamp (so a crash right after a roll leaves a complete time index) and
    /// optionally syncs data and indexes.
    pub(crate) fn prepare_seal(&mut self, sync: bool) -> Result<()> {
        let t0 = self.data.idx.times.len();
        if self.data.idx.finish() {
            self.write_new_entries(self.data.idx.offsets.len(), t0)?;
        }
        if sync {
            self.sync()?;
            self.index_file
                .sync_data()
                .map_err(|e| BrokerError::io(index_path(&self.dir, self.data.base), e))?;
            self.time_file
                .sync_data()
                .map_err(|e| BrokerError::io(time_index_path(&self.dir, self.data.base), e))?;
        }
        Ok(())
    }

    /// Hands back the read-only type; call [`ActiveSegment::prepare_seal`] first.
    pub(crate) fn seal(self) -> SealedSegment {
        SealedSegment { data: self.data }
    }
}

fn valid_batch_at(file: &File, path: &Path, pos: u64, size: u64) -> Result<bool> {
    if pos + HEADER_LEN as u64 > size {
        return Ok(false);
    }
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, pos)
        .map_err(|e| BrokerError::io(path, e))?;
    let Ok(len) = BatchHeader::parse(&head).and_then(|h| h.check_shape()) else {
        return Ok(false);
    };
    if pos + len as u64 > size {
        return Ok(false);
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, pos)
        .map_err(|e| BrokerError::io(path, e))?;
    Ok(batch::validate_batch(&buf).is_ok())
}
