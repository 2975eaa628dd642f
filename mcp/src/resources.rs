//! MCP resources: each context key is `loopsy://context/<key>` (the key percent-encoded), and
//! an agent can subscribe to keys to be told when they change instead of polling. Both the
//! legacy `resources/subscribe` and the 2026-07-28 `subscriptions/listen` are served; one
//! watcher per MCP session compares each subscribed resource's content on every document
//! change (and once a second, since an expiry changes what readers see without a change).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rmcp::ErrorData as McpError;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};

use crate::DaemonCtx;

/// URI prefix of context keys.
pub const CONTEXT_PREFIX: &str = "loopsy://context/";
/// The inbox: its unread messages.
pub const INBOX: &str = "loopsy://inbox";
/// Most URIs one session may watch.
pub const MAX_SUBSCRIPTIONS: usize = 1000;
/// Resources per `resources/list` page.
const PAGE: usize = 200;

/// Everything but unreserved characters and `/` is encoded (keys are often paths).
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// The resource URI of a context key.
pub fn context_uri(key: &str) -> String {
    format!("{CONTEXT_PREFIX}{}", utf8_percent_encode(key, KEY_ENCODE))
}

/// A resource this server knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Res {
    /// A context key.
    Context(String),
    /// This machine's inbox.
    Inbox,
}

/// Parse a resource URI, with an error that says what is served.
pub fn parse(uri: &str) -> Result<Res, McpError> {
    if uri == INBOX {
        return Ok(Res::Inbox);
    }
    let Some(enc) = uri.strip_prefix(CONTEXT_PREFIX) else {
        return Err(McpError::resource_not_found(
            format!("unknown resource {uri:?}: loopsy serves {INBOX} and {CONTEXT_PREFIX}<key>"),
            None,
        ));
    };
    let key = percent_decode_str(enc)
        .decode_utf8()
        .map_err(|_| McpError::invalid_params(format!("{uri:?}: the key is not UTF-8"), None))?;
    loopsy_mesh::context::check_key(&key)
        .map_err(|e| McpError::invalid_params(format!("{uri:?}: {e}"), None))?;
    Ok(Res::Context(key.into_owned()))
}

/// The current content of a resource (`None`: the key is absent or expired).
async fn content(ctx: &DaemonCtx, res: &Res) -> Result<Option<String>, McpError> {
    match res {
        Res::Context(key) => {
            let e = ctx
                .context()
                .get(key)
                .await
                .map_err(|e| McpError::internal_error(e.to_string(), None))?;
            Ok(e.map(|e| serde_json::to_string(&e).unwrap_or_default()))
        }
        Res::Inbox => {
            let unread = ctx
                .messages()
                .inbox(loopsy_mesh::msg::InboxQuery {
                    unread_only: true,
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .map_err(|e| McpError::internal_error(e.to_string(), None))?;
            let list: Vec<serde_json::Value> = unread
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "id": i.env.id, "from": i.env.from, "type": i.env.kind,
                        "thread": i.env.thread, "ts": i.env.ts,
                    })
                })
                .collect();
            Ok(Some(
                serde_json::json!({"unread": list.len(), "messages": list}).to_string(),
            ))
        }
    }
}

/// `resources/list`: the context keys, a page at a time.
pub async fn list(
    ctx: &DaemonCtx,
    cursor: Option<String>,
) -> Result<ListResourcesResult, McpError> {
    // The inbox first, on the first page.
    let inbox = cursor.is_none().then(|| {
        let mut r = Resource::new(INBOX, "inbox");
        r.mime_type = Some("application/json".into());
        r.description = Some(
            "Unread messages (id, from, type, thread); updated when mail arrives or is acked."
                .into(),
        );
        r
    });
    let page = ctx
        .context()
        .list("", PAGE, cursor)
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
    let mut out = ListResourcesResult::with_all_items(
        inbox
            .into_iter()
            .chain(page.entries.into_iter().map(|e| {
                let mut r = Resource::new(context_uri(&e.key), e.key.clone());
                r.mime_type = Some("application/json".into());
                r.description = Some(format!("context key, written by {}", e.written_by));
                r
            }))
            .collect(),
    );
    out.next_cursor = page.next_cursor;
    Ok(out)
}

/// `resources/templates/list`.
pub fn templates() -> ListResourceTemplatesResult {
    let mut t = ResourceTemplate::new(format!("{CONTEXT_PREFIX}{{key}}"), "context key");
    t.mime_type = Some("application/json".into());
    t.description = Some(
        "A key of the mesh-wide context: its entry as JSON {key, value, written_by, written_at, \
         expires_at, conflicts}. Subscribe to be notified when it changes."
            .into(),
    );
    ListResourceTemplatesResult::with_all_items(vec![t])
}

/// `resources/read`.
pub async fn read(ctx: &DaemonCtx, uri: &str) -> Result<ReadResourceResult, McpError> {
    let res = parse(uri)?;
    match content(ctx, &res).await? {
        Some(text) => Ok(ReadResourceResult::new(vec![
            ResourceContents::TextResourceContents {
                uri: uri.to_string(),
                mime_type: Some("application/json".into()),
                text,
                meta: None,
            },
        ])),
        None => Err(McpError::resource_not_found(
            format!("{uri} is not set (or has expired)"),
            None,
        )),
    }
}

/// The URIs one session watches, each with the content last reported (the baseline is taken
/// when the subscription is made, so a change right after it is not missed).
#[derive(Debug, Clone, Default)]
pub struct Subscriptions {
    uris: Arc<Mutex<HashMap<String, Option<String>>>>,
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl Subscriptions {
    /// Watch `uri`; true if the session's watcher still has to be started.
    pub async fn add(&self, ctx: &DaemonCtx, uri: &str) -> Result<bool, McpError> {
        let res = parse(uri)?;
        let now = content(ctx, &res).await?;
        let mut s = self.uris.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() >= MAX_SUBSCRIPTIONS && !s.contains_key(uri) {
            return Err(McpError::invalid_params(
                format!("at most {MAX_SUBSCRIPTIONS} subscriptions per session"),
                None,
            ));
        }
        s.insert(uri.to_string(), now);
        Ok(!self.started.swap(true, std::sync::atomic::Ordering::SeqCst))
    }

    /// Stop watching `uri`.
    pub fn remove(&self, uri: &str) {
        let mut s = self.uris.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(uri);
    }

    fn snapshot(&self) -> Vec<String> {
        let s = self.uris.lock().unwrap_or_else(|p| p.into_inner());
        s.keys().cloned().collect()
    }

    /// Record `now` for `uri`; true if it differs from what was last reported (and the
    /// subscription still exists).
    fn update(&self, uri: &str, now: Option<String>) -> bool {
        let mut s = self.uris.lock().unwrap_or_else(|p| p.into_inner());
        match s.get_mut(uri) {
            Some(prev) if *prev != now => {
                *prev = now;
                true
            }
            _ => false,
        }
    }
}

/// Call `notify(uri)` whenever a watched resource's content changes, until `notify` returns
/// false or `done()` says the session is over.
pub async fn watch<N, F>(
    ctx: DaemonCtx,
    subs: Subscriptions,
    mut notify: N,
    done: impl Fn() -> bool,
) where
    N: FnMut(String) -> F,
    F: std::future::Future<Output = bool>,
{
    let mut changes = ctx.context().changes();
    let mut mail = ctx.messages().inbox_changes();
    loop {
        for uri in subs.snapshot() {
            let Ok(res) = parse(&uri) else { continue };
            let Ok(now) = content(&ctx, &res).await else {
                continue;
            };
            if subs.update(&uri, now) && !notify(uri).await {
                return;
            }
        }
        if done() {
            return;
        }
        // A change, mail, or a second gone by (expiry): look again. A closed store ends it.
        let closed = tokio::select! {
            r = changes.changed() => r.is_err(),
            r = mail.changed() => r.is_err(),
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        };
        if closed {
            return;
        }
    }
}
