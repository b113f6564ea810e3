//! The deterministic ustar archive: one canonical header per (path, size,
//! mtime), fixed mode 0644, uid/gid 0, empty owner names, zero padding, two
//! zero blocks at the end and nothing after them.
//!
//! Hand-written rather than the `tar` crate because verification must be
//! stricter than any general-purpose reader: the reader rebuilds the
//! canonical header for each entry and refuses any byte that differs, so an
//! archive has exactly one encoding. Sizes of 8 GiB and more use the
//! base-256 size encoding that GNU tar, bsdtar and Python's tarfile read.

use std::io::{self, Read, Write};

use crate::error::Rejection;
use crate::limits::MAX_PATH_LEN;

pub const BLOCK: usize = 512;
const MODE: &[u8; 8] = b"0000644\0";
const ZERO_ID: &[u8; 8] = b"0000000\0";
/// Largest size the 11 octal digits of ustar can hold.
const MAX_OCTAL_SIZE: u64 = 0o77777777777;

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    assert_eq!(s.len(), digits, "value {value} does not fit {digits} octal digits");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// The canonical header of a regular file.
pub fn header(path: &str, size: u64, mtime: u64) -> [u8; BLOCK] {
    assert!(!path.is_empty() && path.len() <= MAX_PATH_LEN, "path length checked by the caller");
    let mut h = [0u8; BLOCK];
    h[..path.len()].copy_from_slice(path.as_bytes());
    h[100..108].copy_from_slice(MODE);
    h[108..116].copy_from_slice(ZERO_ID);
    h[116..124].copy_from_slice(ZERO_ID);
    if size <= MAX_OCTAL_SIZE {
        octal(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[329..337].copy_from_slice(ZERO_ID);
    h[337..345].copy_from_slice(ZERO_ID);
    let sum = checksum(&h);
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h[155] = b' ';
    h
}

fn checksum(h: &[u8; BLOCK]) -> u32 {
    h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(b) }).sum()
}

/// Zero bytes that pad `size` to a whole block.
pub fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// Writes entries; the caller writes them in sorted order.
pub struct Writer<W: Write> {
    inner: W,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Writer { inner }
    }

    /// Writes a whole entry held in memory.
    pub fn append(&mut self, path: &str, data: &[u8], mtime: u64) -> io::Result<()> {
        self.inner.write_all(&header(path, data.len() as u64, mtime))?;
        self.inner.write_all(data)?;
        self.pad(data.len() as u64)
    }

    /// Writes the header of an entry whose `size` bytes the caller then
    /// streams with [`Writer::data`] and ends with [`Writer::pad`].
    pub fn begin(&mut self, path: &str, size: u64, mtime: u64) -> io::Result<()> {
        self.inner.write_all(&header(path, size, mtime))
    }

    pub fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.inner.write_all(chunk)
    }

    pub fn pad(&mut self, size: u64) -> io::Result<()> {
        self.inner.write_all(&[0u8; BLOCK][..padding(size)])
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.inner)
    }
}

/// An entry's header as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub mtime: u64,
}

/// A strict streaming reader. Call [`Reader::next_entry`], then read the
/// entry's data with [`Reader::read_data`] (or skip it), then call
/// `next_entry` again; padding and order are checked on the way.
pub struct Reader<R: Read> {
    inner: R,
    offset: u64,
    current: Option<Entry>,
    remaining: u64,
    previous: Option<String>,
    count: usize,
    max_entries: usize,
}

fn bad_path(path: &str, reason: &str) -> Rejection {
    Rejection::BadPath { path: path.to_owned(), reason: reason.to_owned() }
}

/// Checks an entry path: relative, `/`-separated, no `.` or `..`, no empty
/// components, printable ASCII only.
pub fn check_path(path: &str) -> Result<(), Rejection> {
    if path.is_empty() {
        return Err(bad_path(path, "empty"));
    }
    if path.starts_with('/') {
        return Err(bad_path(path, "absolute path"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(bad_path(path, "longer than 100 bytes"));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) || path.contains('\\') {
        return Err(bad_path(path, "only printable ASCII without spaces or backslashes"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(bad_path(path, "empty component")),
            "." | ".." => return Err(bad_path(path, "`.` and `..` are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let end = field.iter().position(|&b| b == 0 || b == b' ').unwrap_or(field.len());
    let digits = &field[..end];
    if digits.is_empty() || !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok()
}

fn truncated(context: impl Into<String>) -> Rejection {
    Rejection::Truncated { context: context.into() }
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R, max_entries: usize) -> Self {
        Reader { inner, offset: 0, current: None, remaining: 0, previous: None, count: 0, max_entries }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn read_exact(&mut self, buf: &mut [u8], context: &str) -> Result<(), ReadError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(truncated(context).into()),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// Reads up to `buf.len()` bytes of the current entry's data; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                let path = self.current.as_ref().map(|e| e.path.clone()).unwrap_or_default();
                return Err(truncated(format!("in the data of {path:?}")).into());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(ReadError::Io(e)),
        };
        self.remaining -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }

    /// Reads the whole current entry into memory (the caller has checked its size).
    pub fn read_all(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut out = vec![0u8; usize::try_from(self.remaining).expect("size checked by the caller")];
        let path = self.current.as_ref().map(|e| e.path.clone()).unwrap_or_default();
        self.read_exact(&mut out, &format!("in the data of {path:?}"))?;
        self.remaining = 0;
        Ok(out)
    }

    fn finish_current(&mut self) -> Result<(), ReadError> {
        let Some(entry) = self.current.take() else { return Ok(()) };
        let mut buf = vec![0u8; 64 * 1024];
        while self.remaining > 0 {
            let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            let mut chunk = std::mem::take(&mut buf);
            let n = self.read_data(&mut chunk[..want]);
            buf = chunk;
            n?;
        }
        let mut pad = [0u8; BLOCK];
        let pad = &mut pad[..padding(entry.size)];
        self.read_exact(pad, &format!("in the padding of {:?}", entry.path))?;
        if pad.iter().any(|&b| b != 0) {
            return Err(Rejection::NonZeroPadding { path: entry.path }.into());
        }
        Ok(())
    }

    /// The next entry's header, or `None` at a valid end of archive (two
    /// zero blocks followed by end of input).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ReadError> {
        self.finish_current()?;
        let at = self.offset;
        let mut h = [0u8; BLOCK];
        self.read_exact(&mut h, "before the end-of-archive marker")?;
        if h.iter().all(|&b| b == 0) {
            self.read_exact(&mut h, "in the end-of-archive marker")?;
            if h.iter().any(|&b| b != 0) {
                return Err(
                    Rejection::NotUstar { offset: at + BLOCK as u64, reason: "a lone zero block".into() }.into()
                );
            }
            let mut probe = [0u8; 1];
            loop {
                match self.inner.read(&mut probe) {
                    Ok(0) => return Ok(None),
                    Ok(_) => return Err(Rejection::TrailingData { offset: self.offset }.into()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
        }
        let entry = self.parse_header(&h, at)?;
        self.count += 1;
        if self.count > self.max_entries {
            return Err(Rejection::TooMany {
                what: "archive entries".into(),
                count: self.count as u64,
                limit: self.max_entries as u64,
            }
            .into());
        }
        if let Some(prev) = &self.previous {
            if *prev == entry.path {
                return Err(Rejection::DuplicateEntry { path: entry.path }.into());
            }
            if prev.as_bytes() > entry.path.as_bytes() {
                return Err(Rejection::OutOfOrder { path: entry.path, previous: prev.clone() }.into());
            }
        }
        self.previous = Some(entry.path.clone());
        self.remaining = entry.size;
        self.current = Some(entry.clone());
        Ok(Some(entry))
    }

    fn parse_header(&self, h: &[u8; BLOCK], at: u64) -> Result<Entry, Rejection> {
        if &h[257..263] != b"ustar\0" || &h[263..265] != b"00" {
            return Err(Rejection::NotUstar { offset: at, reason: "missing ustar magic".into() });
        }
        let stored = parse_octal(&h[148..156]).ok_or(Rejection::HeaderChecksum { offset: at })?;
        if stored != u64::from(checksum(h)) {
            return Err(Rejection::HeaderChecksum { offset: at });
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let prefix_end = h[345..500].iter().position(|&b| b == 0).unwrap_or(155);
        let mut path = String::from_utf8_lossy(&h[..name_end]).into_owned();
        if prefix_end > 0 {
            path = format!("{}/{}", String::from_utf8_lossy(&h[345..345 + prefix_end]), path);
        }
        let kind = match h[156] {
            b'0' => None,
            b'\0' => Some("regular file in the old format"),
            b'1' => Some("hard link"),
            b'2' => Some("symbolic link"),
            b'3' => Some("character device"),
            b'4' => Some("block device"),
            b'5' => Some("directory"),
            b'6' => Some("FIFO"),
            b'7' => Some("contiguous file"),
            b'x' | b'g' => Some("pax extended header"),
            b'L' | b'K' => Some("GNU long-name header"),
            _ => Some("entry of an unknown type"),
        };
        if let Some(kind) = kind {
            return Err(Rejection::NotRegularFile { path, kind: kind.into() });
        }
        check_path(&path)?;
        let size = if h[124] == 0x80 {
            if h[125..128].iter().any(|&b| b != 0) {
                return Err(Rejection::NonCanonicalHeader { path, field: "size".into() });
            }
            u64::from_be_bytes(h[128..136].try_into().expect("8 bytes"))
        } else {
            parse_octal(&h[124..136])
                .ok_or_else(|| Rejection::NonCanonicalHeader { path: path.clone(), field: "size".into() })?
        };
        let mtime = parse_octal(&h[136..148])
            .ok_or_else(|| Rejection::NonCanonicalHeader { path: path.clone(), field: "mtime".into() })?;
        let canonical = header(&path, size, mtime);
        if canonical[..] != h[..] {
            let field = [
                (0..100, "name"),
                (100..108, "mode"),
                (108..116, "uid"),
                (116..124, "gid"),
                (124..136, "size"),
                (136..148, "mtime"),
                (148..156, "checksum"),
                (157..257, "linkname"),
                (265..297, "uname"),
                (297..329, "gname"),
                (329..345, "device numbers"),
                (345..500, "prefix"),
                (500..512, "padding"),
            ]
            .into_iter()
            .find(|(r, _)| canonical[r.clone()] != h[r.clone()])
            .map_or("header", |(_, f)| f);
            return Err(Rejection::NonCanonicalHeader { path, field: field.into() });
        }
        Ok(Entry { path, size, mtime })
    }
}

/// A read failed: a verdict on the input, or an IO error.
#[derive(Debug)]
pub enum ReadError {
    Rejected(Rejection),
    Io(io::Error),
}

impl From<Rejection> for ReadError {
    fn from(r: Rejection) -> Self {
        ReadError::Rejected(r)
    }
}
