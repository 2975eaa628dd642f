//! The loopsy relay Worker: routes requests to one Durable Object per device, which splices
//! the daemon's WebSocket to its phones'. Every decision is made by `loopsy-relay` (plain Rust,
//! tested natively); this crate only moves bytes and storage calls. Compiled for wasm32 only.
#![cfg(target_arch = "wasm32")]

mod assets;
mod device;
mod http;
mod limiter;

use loopsy_relay::api::{self, ApiError, Health, Registered};
use loopsy_relay::route::{self, Route};
use loopsy_relay::secret;
use worker::{Context, Env, Method, Request, RequestInit, Response, event};

pub use device::Device;
pub use limiter::Limiter;

/// The Durable Object binding for devices.
pub(crate) const DEVICE_BINDING: &str = "DEVICE";
/// The Durable Object binding for per-IP limits.
pub(crate) const LIMITER_BINDING: &str = "LIMITER";

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    match handle(req, &env).await {
        Ok(r) => Ok(r),
        Err(e) => http::error(&e),
    }
}

async fn handle(req: Request, env: &Env) -> Result<Response, ApiError> {
    let url = req.url().map_err(http::internal)?;
    let route = route::route(req.method().as_ref(), url.path(), url.query())?;
    match route {
        Route::Root => http::redirect("/app"),
        Route::Health => http::json(
            200,
            &Health {
                ok: true,
                service: "loopsy-relay".into(),
                version: loopsy_relay::VERSION.into(),
                protocols: loopsy_relay::subprotocol::SUPPORTED_VERSIONS.to_vec(),
                registration_secret: registration_secret(env).is_some(),
            },
        ),
        Route::App(file) => assets::serve(env, &url.origin().ascii_serialization(), &file).await,
        Route::Register => register(req, env).await,
        other => {
            let device = other.device().unwrap_or_default();
            let stub = env
                .durable_object(DEVICE_BINDING)
                .and_then(|ns| ns.id_from_name(device)?.get_stub())
                .map_err(http::internal)?;
            stub.fetch_with_request(req).await.map_err(http::internal)
        }
    }
}

fn registration_secret(env: &Env) -> Option<String> {
    env.secret("REGISTRATION_SECRET")
        .ok()
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
}

/// `POST /v1/register`: limited per client IP; needs the registration secret when one is set.
async fn register(req: Request, env: &Env) -> Result<Response, ApiError> {
    let ip = req
        .headers()
        .get("CF-Connecting-IP")
        .ok()
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    limiter::attempt(env, "register", &ip).await?;
    if let Some(want) = registration_secret(env) {
        let got = req
            .headers()
            .get(api::REGISTRATION_HEADER)
            .ok()
            .flatten()
            .unwrap_or_default();
        // Compare hashes so the time taken says nothing about the secret.
        if !secret::same(&got, &want) {
            limiter::failed(env, "register", &ip).await;
            let msg = if got.is_empty() {
                "this relay needs its registration secret: `loopsy relay configure <url> --registration-secret-stdin`"
            } else {
                "wrong registration secret"
            };
            return Err(ApiError::forbidden(msg));
        }
    }
    let device_id = secret::id_from(&http::random()?);
    let device_secret = secret::secret_from(&http::random()?);
    let body =
        serde_json::json!({ "device_id": device_id, "secret_hash": secret::hash(&device_secret) });
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(body.to_string().into()));
    let internal =
        Request::new_with_init(device::INTERNAL_REGISTER, &init).map_err(http::internal)?;
    let stub = env
        .durable_object(DEVICE_BINDING)
        .and_then(|ns| ns.id_from_name(&device_id)?.get_stub())
        .map_err(http::internal)?;
    let resp = stub
        .fetch_with_request(internal)
        .await
        .map_err(http::internal)?;
    if resp.status_code() != 200 {
        return Err(ApiError::new(
            500,
            "internal",
            "could not store the new device: try again",
        ));
    }
    http::json(
        200,
        &Registered {
            device_id,
            device_secret,
        },
    )
}
