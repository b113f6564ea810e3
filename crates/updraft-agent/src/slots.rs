//! Slot writers: a block device or a plain file, written from the start,
//! synced, and read back to check the digest. The booted slot is never
//! opened for writing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use updraft_types::Sha256Digest;

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("refusing to write slot {0}: it is the slot the device booted from")]
    Booted(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> SlotError {
    move |source| SlotError::Io { context, source }
}

/// An open slot being written.
pub struct SlotWriter {
    file: File,
    path: PathBuf,
    written: u64,
}

/// Bytes synced between progress checkpoints.
pub const SYNC_EVERY: u64 = 8 * 1024 * 1024;

impl SlotWriter {
    /// Opens the slot at `path` for writing from `offset`, unless it is the booted one.
    pub fn open(path: &Path, booted: bool, offset: u64) -> Result<SlotWriter, SlotError> {
        if booted {
            return Err(SlotError::Booted(path.display().to_string()));
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(!is_block_device(path))
            .truncate(false)
            .open(path)
            .map_err(io(format!("cannot open slot {}", path.display())))?;
        file.seek(SeekFrom::Start(offset)).map_err(io(format!("cannot seek in slot {}", path.display())))?;
        Ok(SlotWriter { file, path: path.to_path_buf(), written: offset })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes what was written to the device.
    pub fn sync(&mut self) -> Result<u64, SlotError> {
        self.file.sync_data().map_err(io(format!("cannot sync slot {}", self.path.display())))?;
        Ok(self.written)
    }

    /// Syncs everything, including metadata, and closes.
    pub fn finish(self) -> Result<u64, SlotError> {
        self.file.sync_all().map_err(io(format!("cannot sync slot {}", self.path.display())))?;
        Ok(self.written)
    }
}

impl Write for SlotWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false)
}

/// SHA-256 of the first `len` bytes of a slot, read back from the device.
pub fn read_back(path: &Path, len: u64) -> Result<Sha256Digest, SlotError> {
    let file = File::open(path).map_err(io(format!("cannot open slot {}", path.display())))?;
    let mut reader = file.take(len);
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io(format!("cannot read slot {}", path.display())))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        total += n as u64;
    }
    if total < len {
        return Err(SlotError::Io {
            context: format!("slot {} holds {total} bytes, {len} expected", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        });
    }
    Ok(Sha256Digest(sha.finalize().into()))
}
