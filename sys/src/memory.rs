//! What an idle process keeps mapped. Start-up runs code from all over the program (the
//! runtime, TLS, libp2p, the stores), and so does each CLI call the daemon serves; on Linux
//! every page of code that ran, with the pages around it, stays in the process's resident
//! set until memory runs short: about 18 MiB of the 25 MiB a fresh daemon showed in `ps`.

/// Drop this program's read-only, never-written mappings of its own executable from the
/// resident set; returns the bytes they spanned. The pages stay in the system's file cache,
/// so code that runs again is mapped back from memory (a minor fault), not read from disk.
/// Where the platform does not count such pages against a process (macOS's memory
/// footprint) or has no such call, this does nothing and returns 0.
pub fn release_code_pages() -> std::io::Result<usize> {
    crate::imp::memory::release_code_pages()
}

/// [`release_code_pages`] after `first`, then every `every`, for as long as the task runs
/// (a long-lived process's background task). Stops at the first error, logged, or when
/// the platform releases nothing.
pub async fn keep_code_pages_released(first: std::time::Duration, every: std::time::Duration) {
    let mut wait = first;
    loop {
        tokio::time::sleep(wait).await;
        wait = every;
        match tokio::task::spawn_blocking(release_code_pages).await {
            // Nothing to release here (the platform does not do it): no more wake-ups.
            Ok(Ok(0)) => return,
            Ok(Ok(bytes)) => tracing::trace!(bytes, "released code pages"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release code pages");
                return;
            }
            Err(_) => return,
        }
    }
}
