//! The phone web app's files and the headers they are served with — by the Worker at `/app`
//! and by the daemon's local dashboard alike. Only the files listed here exist; everything
//! else is a 404, so no path ever reaches a filesystem or asset store unchecked.

/// The Content-Security-Policy of every app response: scripts, styles, wasm, workers and
/// connections only from this origin; nothing framed; no inline script. (xterm.js sets
/// inline styles for its renderer, hence `style-src 'unsafe-inline'`; the wasm end-to-end
/// module needs `'wasm-unsafe-eval'`.)
pub const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
manifest-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'none'";

/// One servable file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppFile {
    /// Its path under the build directory (`relay/app/dist`).
    pub asset: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Cache-Control`.
    pub cache: &'static str,
}

const FILES: [(&str, AppFile); 9] = [
    (
        "index.html",
        file("app/index.html", "text/html; charset=utf-8", "no-cache"),
    ),
    (
        "app.js",
        file("app/app.js", "text/javascript; charset=utf-8", "no-cache"),
    ),
    (
        "app.css",
        file("app/app.css", "text/css; charset=utf-8", "no-cache"),
    ),
    (
        "loopsy.wasm",
        file("app/loopsy.wasm", "application/wasm", "no-cache"),
    ),
    (
        "sw.js",
        file("app/sw.js", "text/javascript; charset=utf-8", "no-cache"),
    ),
    (
        "manifest.webmanifest",
        file(
            "app/manifest.webmanifest",
            "application/manifest+json",
            "max-age=3600",
        ),
    ),
    (
        "icon.svg",
        file("app/icon.svg", "image/svg+xml", "max-age=86400"),
    ),
    (
        "icon-192.png",
        file("app/icon-192.png", "image/png", "max-age=86400"),
    ),
    (
        "icon-512.png",
        file("app/icon-512.png", "image/png", "max-age=86400"),
    ),
];

const fn file(asset: &'static str, content_type: &'static str, cache: &'static str) -> AppFile {
    AppFile {
        asset,
        content_type,
        cache,
    }
}

/// The file for a path under `/app/` (`""` is the page itself), if it is one of the app's.
pub fn app_file(path: &str) -> Option<AppFile> {
    let name = if path.is_empty() { "index.html" } else { path };
    FILES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Every file, for packaging and tests.
pub fn all_files() -> impl Iterator<Item = AppFile> {
    FILES.iter().map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_files() {
        assert_eq!(app_file("").map(|f| f.asset), Some("app/index.html"));
        assert_eq!(
            app_file("loopsy.wasm").map(|f| f.content_type),
            Some("application/wasm")
        );
        for bad in [
            "../wrangler.toml",
            "app.js/..",
            "x",
            "index.htm",
            "/etc/passwd",
            "sw.js%00",
        ] {
            assert_eq!(app_file(bad), None, "{bad}");
        }
        assert_eq!(all_files().count(), 9);
        assert!(CSP.contains("script-src 'self' 'wasm-unsafe-eval';"));
        assert!(!CSP.contains("script-src 'self' 'unsafe-inline'"));
    }
}
