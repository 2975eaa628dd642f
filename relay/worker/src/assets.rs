//! `/app`: the phone web app. Until the app lands (its own issue) this is a placeholder page,
//! served with the strict headers the real app will keep: a CSP that allows only this origin,
//! no framing, no referrer.

use loopsy_relay::api::ApiError;
use worker::Response;

use crate::http;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; manifest-src 'self'; worker-src 'self'; frame-ancestors 'none'; \
base-uri 'none'; form-action 'none'";

const INDEX: &str = include_str!("../../app/index.html");
const STYLE: &str = include_str!("../../app/app.css");

/// Serve one file of the app.
pub fn serve(file: &str) -> Result<Response, ApiError> {
    let (body, kind) = match file {
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found("no such file in the app")),
    };
    let h = http::base_headers();
    let _ = h.set("Content-Type", kind);
    let _ = h.set("Content-Security-Policy", CSP);
    let _ = h.set("Cache-Control", "no-cache");
    Ok(Response::ok(body).map_err(http::internal)?.with_headers(h))
}
