//! `Limiter`: one Durable Object per (policy, client IP) for limits that exist before any
//! device does (registration). Counters live in the object's storage, so the limit holds on
//! `*.workers.dev` (where the cache API is per-colo and a cache-based limit does nothing).

use loopsy_relay::api::ApiError;
use loopsy_relay::limit::{self, Counter, Policy};
use worker::{DurableObject, Env, Method, Request, RequestInit, Response, State, durable_object};

use crate::http;

const KEY: &str = "counter";

fn policy(name: &str) -> Option<Policy> {
    match name {
        "register" => Some(limit::REGISTER),
        _ => None,
    }
}

/// Count an attempt under `policy` for `who`; `Err` with 429 when over the limit.
pub async fn attempt(env: &Env, policy: &str, who: &str) -> Result<(), ApiError> {
    let mut resp = call(env, policy, who, "attempt").await?;
    if resp.status_code() == 200 {
        return Ok(());
    }
    let body = resp.text().await.map_err(http::internal)?;
    let mut e: ApiError = serde_json::from_str(&body).map_err(http::internal)?;
    e.status = 429;
    Err(e)
}

/// Record a failed attempt (enough in a row lock `who` out).
pub async fn failed(env: &Env, policy: &str, who: &str) {
    if let Err(e) = call(env, policy, who, "failed").await {
        worker::console_error!("limiter: {e}");
    }
}

async fn call(env: &Env, policy: &str, who: &str, op: &str) -> Result<Response, ApiError> {
    let stub = env
        .durable_object(crate::LIMITER_BINDING)
        .and_then(|ns| ns.id_from_name(&format!("{policy}:{who}"))?.get_stub())
        .map_err(http::internal)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post);
    let req = Request::new_with_init(&format!("https://limiter/{policy}/{op}"), &init)
        .map_err(http::internal)?;
    stub.fetch_with_request(req).await.map_err(http::internal)
}

/// The per-IP limit object.
#[durable_object(fetch)]
pub struct Limiter {
    state: State,
}

impl DurableObject for Limiter {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let path = req.path();
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some(name), Some(op)) = (parts.next(), parts.next()) else {
            return Response::error("bad limiter call", 400);
        };
        let Some(p) = policy(name) else {
            return Response::error("unknown policy", 400);
        };
        let storage = self.state.storage();
        let mut c: Counter = storage.get(KEY).await.ok().flatten().unwrap_or_default();
        let now = http::now_s();
        let result = match op {
            "attempt" => c.attempt(&p, now),
            "failed" => {
                c.failed(&p, now);
                Ok(())
            }
            _ => return Response::error("unknown op", 400),
        };
        if c.idle(&p, now) {
            storage.delete(KEY).await?;
        } else {
            storage.put(KEY, c).await?;
        }
        match result {
            Ok(()) => Response::ok("ok"),
            Err(l) => http::error(&ApiError::limited(l)),
        }
    }
}
