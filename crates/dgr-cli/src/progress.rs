//! Progress bars on stderr for long work (hidden when stderr is not a terminal).

use std::sync::Mutex;

use dgr_core::progress::{Progress, Unit};
use indicatif::{ProgressBar, ProgressStyle};

/// Inputs smaller than this finish too fast to need a bar.
const MIN_BYTES_FOR_BAR: u64 = 4 << 20;

pub struct Bar {
    current: Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new() -> Self {
        Bar { current: Mutex::new(None) }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        if let Ok(mut guard) = self.current.lock() {
            f(&mut guard);
        }
    }
}

impl Progress for Bar {
    fn begin(&self, label: &str, total: u64, unit: Unit) {
        let is_bytes = unit == Unit::Bytes;
        let bar = if is_bytes && total < MIN_BYTES_FOR_BAR {
            ProgressBar::hidden()
        } else {
            let template = if is_bytes {
                "{prefix:>16} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{prefix:>16} [{bar:40}] {pos}/{len} {per_sec} eta {eta}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            ProgressBar::new(total).with_style(style).with_prefix(label.to_string())
        };
        self.with_bar(|slot| {
            if let Some(old) = slot.replace(bar) {
                old.finish_and_clear();
            }
        });
    }

    fn advance(&self, amount: u64) {
        self.with_bar(|slot| {
            if let Some(bar) = slot {
                bar.inc(amount);
            }
        });
    }

    fn finish(&self) {
        self.with_bar(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }
}
