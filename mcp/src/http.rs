//! The optional Streamable HTTP MCP endpoint on 127.0.0.1: bearer token (rotatable without a
//! restart), Host checks against DNS rebinding, and no browser origins.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use loopsy_mesh::ApiToken;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tracing::{info, warn};

use crate::{Caller, DaemonCtx, LoopsyServer};

/// Largest request body accepted.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Bind 127.0.0.1:`port` and serve `/mcp` until shutdown. Returns the bound address.
pub async fn spawn(ctx: DaemonCtx, port: u16) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let stop = ctx.shutdown_token().clone();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts([
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            format!("127.0.0.1:{}", addr.port()),
            format!("localhost:{}", addr.port()),
        ])
        // Browsers are not clients of this endpoint: any Origin header is refused.
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_BODY)
        .with_cancellation_token(stop.child_token());
    let factory_ctx = ctx.clone();
    let service = StreamableHttpService::new(
        move || Ok(LoopsyServer::new(factory_ctx.clone(), Caller::Http)),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app =
        axum::Router::new()
            .nest_service("/mcp", service)
            .layer(middleware::from_fn_with_state(
                ctx.token().clone(),
                require_bearer,
            ));
    info!(%addr, "HTTP MCP endpoint listening");
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "HTTP MCP endpoint stopped");
        }
    });
    Ok(addr)
}

async fn require_bearer(State(token): State<ApiToken>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|t| token.matches(t.trim())) {
        return next.run(req).await;
    }
    // Read (a little of) the refused body: an unread body makes hyper drop the connection
    // after the reply, and a client that reuses it at once gets no answer at all.
    let drained = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .is_ok();
    let mut r = (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token: use `Authorization: Bearer <loopsy key show>`\n",
    )
        .into_response();
    if !drained {
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    r
}
