//! `/app`: the phone web app, from the Worker's static assets (built by scripts/build-app),
//! served only for the files `loopsy_relay::web` lists, with its CSP and the usual headers.

use loopsy_relay::api::ApiError;
use loopsy_relay::web;
use worker::{Env, Response};

use crate::http;

/// Serve `file` (the path under `/app/`).
pub async fn serve(env: &Env, origin: &str, file: &str) -> Result<Response, ApiError> {
    let f = web::app_file(file).ok_or_else(|| ApiError::not_found("no such file in the app"))?;
    let assets = env.assets("ASSETS").map_err(http::internal)?;
    let mut r = assets
        .fetch(format!("{origin}/{}", f.asset), None)
        .await
        .map_err(http::internal)?;
    if r.status_code() != 200 {
        return Err(ApiError::not_found(
            "the phone app is not in this relay's assets: build it with scripts/build-app and deploy again",
        ));
    }
    let body = r.bytes().await.map_err(http::internal)?;
    let h = http::base_headers();
    let _ = h.set("Content-Type", f.content_type);
    let _ = h.set("Cache-Control", f.cache);
    let _ = h.set("Content-Security-Policy", web::CSP);
    let _ = h.set("Cross-Origin-Opener-Policy", "same-origin");
    let _ = h.set("Cross-Origin-Resource-Policy", "same-origin");
    let _ = h.set(
        "Permissions-Policy",
        "camera=(), geolocation=(), microphone=(self)",
    );
    if file == "sw.js" {
        let _ = h.set("Service-Worker-Allowed", "/app/");
    }
    Ok(Response::from_bytes(body)
        .map_err(http::internal)?
        .with_headers(h))
}
