//! Crash-safe output files: write to a temporary file in the destination's
//! folder, fsync it, rename it into place, fsync the folder. A failure at any
//! point leaves no partial output behind (the temporary file is removed when
//! dropped).

use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256, Sha512};
use updraft_types::{Sha256Digest, Sha512Digest};

use crate::error::{Error, Result};
use crate::manifest::Digests;

/// Whether an existing destination may be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    Replace,
    Refuse,
}

/// An output file being written.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl AtomicFile {
    /// Starts a new output at `dest` with permission bits `mode` (0o600 for
    /// private keys, 0o644 otherwise; not subject to the umask).
    pub fn create(dest: &Path, mode: u32) -> Result<Self> {
        let dir = parent_of(dest);
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(&dir)
            .map_err(|e| Error::io(format!("cannot create a temporary file in {}", dir.display()), e))?;
        // Builder::permissions is applied at creation, through the umask on
        // some systems: set it again explicitly.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("cannot set permissions on {}", tmp.path().display()), e))?;
        Ok(AtomicFile { tmp, dest: dest.to_path_buf() })
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes to disk and moves the file into place.
    pub fn commit(self, overwrite: Overwrite) -> Result<()> {
        let dest = self.dest;
        self.tmp.as_file().sync_all().map_err(|e| Error::io(format!("cannot sync {}", dest.display()), e))?;
        match overwrite {
            Overwrite::Replace => self.tmp.persist(&dest).map(drop).map_err(|e| e.error),
            Overwrite::Refuse => self.tmp.persist_noclobber(&dest).map(drop).map_err(|e| e.error),
        }
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::Invalid(format!(
                    "{} already exists; hint: choose another name or remove it first",
                    dest.display()
                ))
            } else {
                Error::io(format!("cannot move the new file to {}", dest.display()), e)
            }
        })?;
        sync_dir(&parent_of(&dest))
    }
}

/// fsyncs a folder so that a rename in it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync folder {}", dir.display()), e))
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32, overwrite: Overwrite) -> Result<()> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.file().write_all(bytes).map_err(|e| Error::io(format!("cannot write {}", dest.display()), e))?;
    f.commit(overwrite)
}

/// Reads a whole small file, refusing one over `limit` bytes.
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| Error::io(format!("cannot open {what} {}", path.display()), e))?;
    let mut out = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(format!("cannot read {what} {}", path.display()), e))?;
    if out.len() as u64 > limit {
        return Err(Error::Invalid(format!("{what} {} is larger than {limit} bytes", path.display())));
    }
    Ok(out)
}

/// Streaming buffer size: large enough for full hashing speed, small enough
/// to keep memory flat whatever the image size.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// What [`hash_stream`] computed.
pub struct Hashed {
    pub size: u64,
    pub sha256: Sha256Digest,
    pub sha512: Option<Sha512Digest>,
}

/// Streams everything `read` yields (until it returns 0) into `sink`,
/// computing SHA-256 and, when `sha512` is set, SHA-512 on a second thread
/// fed through a bounded channel, so that the two hashes run side by side
/// and memory stays flat.
pub fn hash_stream(
    read: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    sink: &mut dyn Write,
    sha512: bool,
    advance: &dyn Fn(u64),
) -> Result<Hashed> {
    let sink_err = |e: io::Error| Error::io("cannot write the image", e);
    let mut s256 = Sha256::new();
    let mut size = 0u64;
    if !sha512 {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = read(&mut buf)?;
            if n == 0 {
                return Ok(Hashed { size, sha256: Sha256Digest(s256.finalize().into()), sha512: None });
            }
            s256.update(&buf[..n]);
            sink.write_all(&buf[..n]).map_err(sink_err)?;
            size += n as u64;
            advance(n as u64);
        }
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(2);
        let worker = scope.spawn(move || {
            let mut s512 = Sha512::new();
            for chunk in rx {
                s512.update(&chunk[..]);
            }
            Sha512Digest(s512.finalize().into())
        });
        let mut pump = || -> Result<()> {
            loop {
                let mut chunk = vec![0u8; CHUNK_BYTES];
                let n = read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                chunk.truncate(n);
                let chunk = Arc::new(chunk);
                // The worker only stops when the channel closes.
                let _ = tx.send(Arc::clone(&chunk));
                s256.update(&chunk[..]);
                sink.write_all(&chunk).map_err(sink_err)?;
                size += n as u64;
                advance(n as u64);
            }
        };
        let result = pump();
        drop(tx);
        let sha512 = worker.join().expect("the sha512 worker does not panic");
        result.map(|()| Hashed { size, sha256: Sha256Digest(s256.finalize().into()), sha512: Some(sha512) })
    })
}

/// SHA-256 and SHA-512 of a file, streamed, with its size.
pub fn hash_file(path: &Path, progress: &dyn Fn(u64)) -> Result<(u64, Digests)> {
    let mut f = File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut read = |buf: &mut [u8]| loop {
        match f.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map_err(|e| Error::io(format!("cannot read {}", path.display()), e)),
        }
    };
    let h = hash_stream(&mut read, &mut io::sink(), true, progress)?;
    Ok((h.size, Digests { sha256: h.sha256, sha512: h.sha512.expect("sha512 requested") }))
}
