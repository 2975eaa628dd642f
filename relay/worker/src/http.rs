//! Response helpers: JSON bodies, errors with their status and `Retry-After`, the security
//! headers every answer carries, and randomness.

use loopsy_relay::api::ApiError;
use serde::Serialize;
use worker::{Headers, Response};

/// Headers on every response.
pub fn base_headers() -> Headers {
    let h = Headers::new();
    let _ = h.set("X-Content-Type-Options", "nosniff");
    let _ = h.set("Referrer-Policy", "no-referrer");
    let _ = h.set("Cache-Control", "no-store");
    let _ = h.set("X-Frame-Options", "DENY");
    h
}

/// A JSON answer.
pub fn json<T: Serialize>(status: u16, body: &T) -> Result<Response, ApiError> {
    let text = serde_json::to_string(body).map_err(|e| internal(e.to_string()))?;
    let h = base_headers();
    let _ = h.set("Content-Type", "application/json");
    Ok(Response::ok(text)
        .map_err(internal)?
        .with_status(status)
        .with_headers(h))
}

/// An error answer (never fails: a last-resort plain body if JSON cannot be built).
pub fn error(e: &ApiError) -> worker::Result<Response> {
    let h = base_headers();
    let _ = h.set("Content-Type", "application/json");
    if let Some(s) = e.retry_after_s {
        let _ = h.set("Retry-After", &s.to_string());
    }
    Ok(Response::ok(e.body())?
        .with_status(e.status)
        .with_headers(h))
}

/// A redirect to a path on this origin.
pub fn redirect(path: &str) -> Result<Response, ApiError> {
    let h = base_headers();
    let _ = h.set("Location", path);
    Ok(Response::empty()
        .map_err(internal)?
        .with_status(302)
        .with_headers(h))
}

/// An internal failure (logged, answered as 500 without details).
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    worker::console_error!("internal error: {e}");
    ApiError::new(500, "internal", "the relay failed internally: try again")
}

/// `N` random bytes from the platform's CSPRNG.
pub fn random<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(internal)?;
    Ok(b)
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    worker::Date::now().as_millis() / 1000
}

/// The client's address as Cloudflare reports it (`CF-Connecting-IP`; `unknown` without
/// one), IPv6 by its /64 (one client holds a whole /64 and could rotate through it).
pub fn client_ip(req: &worker::Request) -> String {
    let ip = req
        .headers()
        .get("CF-Connecting-IP")
        .ok()
        .flatten()
        .filter(|ip| !ip.is_empty() && ip.len() <= 64)
        .unwrap_or_else(|| "unknown".into());
    loopsy_relay::limit::client_key(&ip)
}
