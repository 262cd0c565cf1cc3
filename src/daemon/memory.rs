//! glibc malloc settings for a long-running daemon whose working set comes in bursts
//! (a full sync builds tens of MB of text, then frees it).

/// Large buffers get their own mappings, so freeing them returns the memory at once;
/// glibc's default threshold grows with the largest freed block and then keeps such
/// buffers in the heap, where they stay resident.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before heavy allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// Hands free heap pages back to the kernel (after a sync or a relist freed a lot).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator considers free.
    unsafe {
        libc::malloc_trim(0);
    }
}
