//! Keeping freed tensor buffers in the process on the CPU backend.
//!
//! glibc's `malloc` serves blocks above its mmap threshold (at most 32 MiB) with fresh `mmap`s and
//! returns them on `free`; the student's larger buffers (vocabulary-sized logits, the gradients
//! of the 30k x 384 word embeddings) are then faulted in page by page on every step. Measured on
//! the MiniLM-size train step (docs/benchmarks.md), that was about a fifth of the step.

/// Makes glibc keep freed memory for reuse: no `mmap` for large blocks, no trimming of the
/// heap. Call once, before the first tensor is made. A no-op on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before other threads
        // allocate, and returns 0 (ignored: the defaults stay) when a value is refused.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    }
}
