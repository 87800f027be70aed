//! Writes that are all-or-nothing: data goes to a temporary name in the destination's folder
//! and is renamed over the destination only when complete, so readers never see half a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file being written. Dropping it without [`AtomicFile::commit`] deletes the temporary file.
pub struct AtomicFile {
    dest: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> Result<Self> {
        let temp = beside(dest, ".tmp", |builder, dir| builder.tempfile_in(dir))
            .map_err(|e| Error::io(dest, "cannot create temporary file", e))?;
        Ok(AtomicFile { dest: dest.to_path_buf(), temp })
    }

    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// A second handle on the temporary file, for writers that take ownership of their sink.
    pub fn writer(&self) -> Result<BufWriter<File>> {
        let file =
            self.temp.as_file().try_clone().map_err(|e| Error::io(&self.dest, "cannot open temporary file", e))?;
        Ok(BufWriter::with_capacity(1 << 20, file))
    }

    /// Flushes to disk and renames the temporary file over the destination.
    pub fn commit(self) -> Result<()> {
        self.temp.as_file().sync_all().map_err(|e| Error::io(&self.dest, "cannot sync", e))?;
        self.temp
            .persist(&self.dest)
            .map_err(|e| Error::io(&self.dest, "cannot rename temporary file into place", e.error))?;
        Ok(())
    }
}

/// Writes `contents` to `dest` atomically.
pub fn write_atomic(dest: &Path, contents: &[u8]) -> Result<()> {
    let file = AtomicFile::create(dest)?;
    let mut w = file.writer()?;
    w.write_all(contents).and_then(|_| w.flush()).map_err(|e| Error::io(dest, "cannot write", e))?;
    drop(w);
    file.commit()
}

/// A directory built under a temporary name next to its destination and renamed into place
/// by [`StagingDir::commit`]; dropped uncommitted, it is removed with its contents.
pub struct StagingDir {
    dest: PathBuf,
    temp: tempfile::TempDir,
}

impl StagingDir {
    /// Fails if `dest` exists, unless `replace` allows removing it at commit time.
    pub fn create(dest: &Path, replace: bool) -> Result<Self> {
        if dest.exists() && !replace {
            return Err(Error::format(dest, "output already exists (pass --overwrite to replace it)"));
        }
        let temp = beside(dest, ".partial", |builder, dir| builder.tempdir_in(dir))
            .map_err(|e| Error::io(dest, "cannot create staging directory", e))?;
        Ok(StagingDir { dest: dest.to_path_buf(), temp })
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    pub fn commit(self) -> Result<()> {
        if self.dest.exists() {
            std::fs::remove_dir_all(&self.dest)
                .map_err(|e| Error::io(&self.dest, "cannot remove previous output", e))?;
        }
        let temp = self.temp.keep();
        std::fs::rename(&temp, &self.dest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&temp);
            Error::io(&self.dest, "cannot rename staging directory into place", e)
        })
    }
}

/// Creates a hidden temporary entry `.<name>.XXXXXX<suffix>` in `dest`'s folder (creating the
/// folder), so that the final rename stays within one file system.
fn beside<T>(
    dest: &Path,
    suffix: &str,
    create: impl FnOnce(&tempfile::Builder, &Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let dir = parent_dir(dest);
    std::fs::create_dir_all(dir)?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    create(tempfile::Builder::new().prefix(&prefix).suffix(suffix), dir)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
