//! Progress reporting without a terminal dependency: long work reports bytes consumed to a
//! [`Progress`] sink; the CLI turns that into a progress bar, tests ignore it.

use std::io::Read;

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of input read.
    Bytes,
    /// Records, batches or steps.
    Items,
}

pub trait Progress: Sync {
    /// A new phase starts; `total` is its size in `unit`s, 0 where unknown.
    fn begin(&self, _label: &str, _total: u64, _unit: Unit) {}
    fn advance(&self, _amount: u64) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A reader that reports the bytes it reads.
pub struct CountingReader<'p, R> {
    inner: R,
    progress: &'p dyn Progress,
}

impl<'p, R: Read> CountingReader<'p, R> {
    pub fn new(inner: R, progress: &'p dyn Progress) -> Self {
        CountingReader { inner, progress }
    }
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
