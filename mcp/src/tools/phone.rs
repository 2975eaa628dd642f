//! Phone relay management, on the CLI's admin session only (`loopsy relay …`, `loopsy mobile
//! pair`, `loopsy phone …`): an agent cannot open a phone pairing or revoke phones. The relay's
//! device secret never travels through here: `loopsy relay configure` writes it to
//! `relay.json` itself and then asks the daemon to reload.

use std::time::Duration;

use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DaemonCtx;
use crate::phone::PhoneHub;
use crate::tool_error::{ErrorCode, ToolError, success};

/// Longest phone pairing window.
pub const MAX_PAIR_TTL_S: u64 = 3600;

/// `loopsy_mobile_pair` arguments.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MobilePairArgs {
    /// Seconds the link and code stay valid (default 300, 30 to 3600).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// `loopsy_phone_revoke` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneArgs {
    /// The phone's id (`loopsy phone list`).
    pub phone: String,
}

fn hub(ctx: &DaemonCtx) -> Result<&PhoneHub, CallToolResult> {
    ctx.phones().ok_or_else(|| {
        ToolError::new(ErrorCode::Unavailable, "the phone relay is not running").into_result()
    })
}

fn status_text(s: &crate::phone::LinkStatus) -> String {
    match (&s.url, &s.last_error) {
        (None, _) => "no relay configured: `loopsy relay configure <url>`".into(),
        (Some(u), Some(e)) if s.state != "connected" => format!("{} {u}: {e}", s.state),
        (Some(u), _) => format!("{} {u} ({} phone connections)", s.state, s.channels),
    }
}

/// `loopsy_relay_status`
pub async fn relay_status(ctx: &DaemonCtx) -> CallToolResult {
    match hub(ctx) {
        Ok(h) => {
            let s = h.status();
            success(status_text(&s), &s)
        }
        Err(r) => r,
    }
}

/// `loopsy_relay_reload`: re-read relay.json, reconnect, and wait up to 10 s for the link.
pub async fn relay_reload(ctx: &DaemonCtx) -> CallToolResult {
    let h = match hub(ctx) {
        Ok(h) => h,
        Err(r) => return r,
    };
    if let Err(e) = h.reload() {
        return ToolError::new(ErrorCode::InvalidArguments, e).into_result();
    }
    let s = if h.creds().is_some() {
        h.wait_connected(Duration::from_secs(10)).await
    } else {
        h.status()
    };
    success(status_text(&s), &s)
}

/// `loopsy_mobile_pair`
pub async fn mobile_pair(ctx: &DaemonCtx, a: MobilePairArgs) -> CallToolResult {
    let h = match hub(ctx) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let ttl = a.ttl_s.unwrap_or(300);
    if !(30..=MAX_PAIR_TTL_S).contains(&ttl) {
        return ToolError::new(
            ErrorCode::InvalidArguments,
            format!("ttl_s must be between 30 and {MAX_PAIR_TTL_S}"),
        )
        .into_result();
    }
    match h.pair(ttl).await {
        Ok(p) => success(format!("pair link {} code {}", p.link, p.code), &p),
        Err(e) => ToolError::new(ErrorCode::Unavailable, e).into_result(),
    }
}

/// `loopsy_phone_list`
pub async fn phone_list(ctx: &DaemonCtx) -> CallToolResult {
    let h = match hub(ctx) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let out = h.phones().await;
    let text = if out.phones.is_empty() {
        "no phones paired".to_string()
    } else {
        out.phones
            .iter()
            .map(|p| format!("{} {}", p.phone.phone_id, p.phone.label))
            .collect::<Vec<_>>()
            .join("\n")
    };
    success(text, &out)
}

/// `loopsy_phone_revoke`
pub async fn phone_revoke(ctx: &DaemonCtx, a: PhoneArgs) -> CallToolResult {
    let h = match hub(ctx) {
        Ok(h) => h,
        Err(r) => return r,
    };
    if !loopsy_relay::route::valid_id(&a.phone) {
        return ToolError::new(
            ErrorCode::InvalidArguments,
            "a phone id is 32 hex characters: `loopsy phone list` shows them",
        )
        .into_result();
    }
    match h.revoke(&a.phone).await {
        Ok(r) => success(format!("revoked {}", r.phone_id), &r),
        Err(e) => ToolError::new(ErrorCode::NotFound, e).into_result(),
    }
}

/// `loopsy_dashboard` arguments.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DashboardArgs {
    /// Seconds the link stays valid (default 300).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// The dashboard's one-tab link.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DashboardOut {
    /// Open this in a browser on this machine (it carries a one-time pairing, use it once).
    pub url: String,
}

/// `loopsy_dashboard`
pub async fn dashboard(ctx: &DaemonCtx, a: DashboardArgs) -> CallToolResult {
    let h = match hub(ctx) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match h.dashboard_link(a.ttl_s.unwrap_or(300)).await {
        Ok(url) => success(url.clone(), &DashboardOut { url }),
        Err(e) => ToolError::new(ErrorCode::Unavailable, e).into_result(),
    }
}
