//! The MCP server: the `loopsy_*` tools, typed inputs, structured outputs, audited calls.

use std::time::Instant;

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorCode as RpcCode, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ResourceUpdatedNotificationParam,
    ServerCapabilities, ServerConfig, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, RoleServer, SubscriptionContext};
use rmcp::{ErrorData as McpError, ServerHandler, tool, tool_handler, tool_router};

use crate::audit::AuditRecord;
use crate::resources;
use crate::tool_error::{ErrorCode, ToolError, success};
use crate::tools::admin::{
    self, CapsArgs, NoArgs, PairOpenArgs, PairWithArgs, PeerAddArgs, RemoveArgs, RenameArgs,
};
use crate::tools::commands;
use crate::tools::context;
use crate::tools::exec::{
    self, ExecuteArgs, ExecuteOut, JobArgs, JobListArgs, JobOutputArgs, JobView, JobWaitArgs,
    JobsOut,
};
use crate::tools::files::{self, ListArgs, ListOut, TransferArgs, TransferOut};
use crate::tools::messages;
use crate::tools::peers::{self, ListPeersArgs, PeerStatusArgs, PeersOut};
use crate::tools::phone;
use crate::tools::progress::Reporter;
use crate::tools::sessions;
use crate::tools::status::{self, StatusArgs, StatusOut};
use crate::tools::tasks;
use crate::{Caller, DaemonCtx};
use loopsy_mesh::exec::OutputPage;
use loopsy_mesh::{PairTicket, PeerView};
use loopsy_term::{SessionInfo, WaitOut};

const INSTRUCTIONS: &str = "loopsy connects this machine to the user's other machines (a mesh of \
daemons). Tools are named loopsy_*. Peers are named by friendly name or PeerId; never pass keys. \
Failed calls return isError with structuredContent {code, message}: read the message, it says \
what to do next.";

/// One MCP session's server (one per connection); clones share the daemon context.
#[derive(Clone)]
pub struct LoopsyServer {
    ctx: DaemonCtx,
    caller: Caller,
    tool_router: ToolRouter<Self>,
    /// Set when this session opened a pairing window (closed again when the session ends).
    opened_window: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Resources this session subscribed to (legacy `resources/subscribe`).
    subs: crate::resources::Subscriptions,
}

impl LoopsyServer {
    /// Call when the session has ended: a pairing window it opened must not outlive it
    /// (a `loopsy pair` killed hard would otherwise leave the code valid until its TTL).
    pub async fn session_ended(&self) {
        if self
            .opened_window
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.ctx.node().pair_close().await;
        }
    }
}

impl std::fmt::Debug for LoopsyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopsyServer")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

#[tool_router]
impl LoopsyServer {
    /// A server for one connection from `caller`.
    pub fn new(ctx: DaemonCtx, caller: Caller) -> Self {
        let mut tool_router = if caller == Caller::Admin {
            Self::tool_router() + Self::admin_router()
        } else {
            Self::tool_router()
        };
        // Every tool as clients read it (schemas tidied once per process).
        static TIDY: std::sync::OnceLock<std::collections::HashMap<String, rmcp::model::Tool>> =
            std::sync::OnceLock::new();
        let tidy = TIDY.get_or_init(|| {
            (Self::tool_router() + Self::admin_router())
                .map
                .into_iter()
                .map(|(name, mut route)| {
                    crate::schema::tidy(&mut route.attr);
                    (name.to_string(), route.attr)
                })
                .collect()
        });
        for (name, route) in tool_router.map.iter_mut() {
            if let Some(t) = tidy.get(name.as_ref()) {
                route.attr = t.clone();
            }
        }
        Self {
            ctx,
            caller,
            tool_router,
            opened_window: Default::default(),
            subs: Default::default(),
        }
    }

    #[tool(
        description = "This loopsy node: name, PeerId, version, pid, uptime and the mesh's listen addresses (multiaddrs).",
        output_schema = schema_for_output::<StatusOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_status(&self, Parameters(_): Parameters<StatusArgs>) -> CallToolResult {
        match status::status(&self.ctx).await {
            Ok(s) => success(status::summary(&s), &s),
            Err(e) => e.into_result(),
        }
    }

    #[tool(
        description = "The machines this one trusts: name, PeerId, online, how reached (direct, hole-punched, or relayed via which relay node, and since when), transport, RTT, last seen, and what each may do here.",
        output_schema = schema_for_output::<PeersOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_list_peers(&self, Parameters(_): Parameters<ListPeersArgs>) -> CallToolResult {
        peers::list(&self.ctx).await
    }

    #[tool(
        description = "One trusted peer's state (by name or PeerId).",
        output_schema = schema_for_output::<PeerView>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_peer_status(
        &self,
        Parameters(a): Parameters<PeerStatusArgs>,
    ) -> CallToolResult {
        peers::status(&self.ctx, a).await
    }

    #[tool(
        description = "Run a command on a peer (or here, without `peer`). Returns the result if it finishes within wait_s (default 30 s), else a job id for loopsy_job_wait / loopsy_job_output / loopsy_job_kill. Without `args` the command is a shell line (sh -c); with `args` it runs directly. A non-zero exit is a result, not a tool error.",
        output_schema = schema_for_output::<ExecuteOut>(),
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn loopsy_execute(
        &self,
        Parameters(a): Parameters<ExecuteArgs>,
        rc: RequestContext<RoleServer>,
    ) -> CallToolResult {
        exec::execute_reporting(&self.ctx, &self.caller, a, Reporter::from_ctx(&rc)).await
    }

    #[tool(
        description = "A job's state, exit code and output sizes.",
        output_schema = schema_for_output::<JobView>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_job_status(&self, Parameters(a): Parameters<JobArgs>) -> CallToolResult {
        exec::status(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Wait (up to timeout_s, max 60) for a job to finish; returns its state. Call again to keep waiting.",
        output_schema = schema_for_output::<JobView>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn loopsy_job_wait(&self, Parameters(a): Parameters<JobWaitArgs>) -> CallToolResult {
        exec::wait(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "A page of a job's stdout or stderr from a byte offset; follow next_offset until eof.",
        output_schema = schema_for_output::<OutputPage>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_job_output(&self, Parameters(a): Parameters<JobOutputArgs>) -> CallToolResult {
        exec::output(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Kill a job and its whole process group (SIGTERM, then SIGKILL after 2 s).",
        output_schema = schema_for_output::<JobView>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn loopsy_job_kill(&self, Parameters(a): Parameters<JobArgs>) -> CallToolResult {
        exec::kill(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Jobs this caller started (here, or on `peer`), newest first.",
        output_schema = schema_for_output::<JobsOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_job_list(&self, Parameters(a): Parameters<JobListArgs>) -> CallToolResult {
        exec::list(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Copy a file to (push) or from (pull) a peer. Streamed in chunks, BLAKE3-verified end to end, written under a temporary name and renamed only when intact, resumed automatically if the connection drops. Paths are checked against files.allowed_paths/denied_paths on both machines; existing files are kept unless overwrite is true.",
        output_schema = schema_for_output::<TransferOut>(),
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn loopsy_transfer_file(
        &self,
        Parameters(a): Parameters<TransferArgs>,
        rc: RequestContext<RoleServer>,
    ) -> CallToolResult {
        files::transfer(&self.ctx, a, Reporter::from_ctx(&rc)).await
    }

    #[tool(
        description = "List a directory (or stat a file) on a peer: name, kind, size, mtime.",
        output_schema = schema_for_output::<ListOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = true)
    )]
    async fn loopsy_list_remote_files(
        &self,
        Parameters(a): Parameters<ListArgs>,
    ) -> CallToolResult {
        files::list(&self.ctx, a).await
    }

    #[tool(
        description = "Set a key in the shared context (here, or on `peer`): a string or any JSON value, optional ttl_s. Returns once it is durable on that machine.",
        output_schema = schema_for_output::<loopsy_mesh::context::Entry>(),
        annotations(destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_context_set(
        &self,
        Parameters(a): Parameters<context::SetArgs>,
    ) -> CallToolResult {
        context::set(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Read a context key (here, or that peer's copy): value, who wrote it and when, expiry, and any concurrent values that lost (conflicts).",
        output_schema = schema_for_output::<context::GetOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_context_get(
        &self,
        Parameters(a): Parameters<context::KeyArgs>,
    ) -> CallToolResult {
        context::get(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "List context entries in key order: optional prefix, limit (default 100, max 1000) and the cursor of the previous page.",
        output_schema = schema_for_output::<loopsy_mesh::context::Page>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_context_list(
        &self,
        Parameters(a): Parameters<context::ListArgs>,
    ) -> CallToolResult {
        context::list(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Set a context key here, then wait (wait_s, default 10, max 60) until every online peer sharing the context shows this write; reports which peers confirmed it, which are pending and which are offline.",
        output_schema = schema_for_output::<context::BroadcastOut>(),
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn loopsy_broadcast_context(
        &self,
        Parameters(a): Parameters<context::BroadcastArgs>,
    ) -> CallToolResult {
        context::broadcast(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Send a message to a peer (name or PeerId) or to every peer (to = \"*\"). Durable: it is queued here and retried until the recipient's daemon acknowledges it (delivery ack), even across restarts and disconnections, until ttl_s. Returns the id and each recipient's state (pending, delivered, read). The recipient's agent reads it with loopsy_wait_for_message or loopsy_check_inbox.",
        output_schema = schema_for_output::<messages::SendOut>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    async fn loopsy_send_message(
        &self,
        Parameters(a): Parameters<messages::SendArgs>,
    ) -> CallToolResult {
        messages::send(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Messages in this machine's inbox, oldest first: unread only by default; filter by from (peer) or thread. Each has id, from (PeerId), from_name, type, body, ts, reply_to, thread, read. Also counts messages dropped as invalid.",
        output_schema = schema_for_output::<messages::InboxOut>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn loopsy_check_inbox(
        &self,
        Parameters(a): Parameters<messages::InboxArgs>,
    ) -> CallToolResult {
        messages::inbox(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Block until an unread message (optionally from a peer or in a thread) is in the inbox, and return the oldest one; times out after timeout_s (default 60, max 300). Use this instead of polling. Acknowledge it with loopsy_ack_message, or the next wait returns it again.",
        output_schema = schema_for_output::<messages::WaitOut>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn loopsy_wait_for_message(
        &self,
        Parameters(a): Parameters<messages::WaitArgs>,
    ) -> CallToolResult {
        messages::wait(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Acknowledge a message in the inbox as read: it leaves the unread list and its sender gets a read receipt (delivered to the sender's daemon like any message).",
        output_schema = schema_for_output::<loopsy_mesh::msg::InboxMessage>(),
        annotations(read_only_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn loopsy_ack_message(
        &self,
        Parameters(a): Parameters<messages::AckArgs>,
    ) -> CallToolResult {
        messages::ack(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "What became of messages sent from here: by id, or the last 100 to a peer. Per recipient: pending (queued, retried), delivered (in its inbox), read (its agent acknowledged), expired or rejected, with times and the last delivery error.",
        output_schema = schema_for_output::<messages::CheckAckOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_check_ack(
        &self,
        Parameters(a): Parameters<messages::CheckAckArgs>,
    ) -> CallToolResult {
        messages::check_ack(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Hand a task to another agent: assignee is a peer (name or PeerId), * for any peer, or this machine. The task lives here; the assignee gets a task message (thread = task id) to wait for. Returns the task (id, status submitted). Then wait for it with loopsy_task_wait.",
        output_schema = schema_for_output::<tasks::TaskView>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    async fn loopsy_task_create(
        &self,
        Parameters(a): Parameters<tasks::CreateArgs>,
    ) -> CallToolResult {
        tasks::create(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Claim a task (id from the task message) before working on it. Exactly one claim wins; if another worker got it first this fails with code conflict and says who has it. Moves it to working.",
        output_schema = schema_for_output::<tasks::TaskView>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    async fn loopsy_task_claim(
        &self,
        Parameters(a): Parameters<tasks::ClaimArgs>,
    ) -> CallToolResult {
        tasks::claim(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Move a task you claimed on: working, input-required (say what you need in note), completed (with result), failed (say why in note), or canceled. The creator may cancel at any time.",
        output_schema = schema_for_output::<tasks::TaskView>(),
        annotations(read_only_hint = false, destructive_hint = false, open_world_hint = true)
    )]
    async fn loopsy_task_update(
        &self,
        Parameters(a): Parameters<tasks::UpdateArgs>,
    ) -> CallToolResult {
        tasks::update(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Tasks created on this machine (or, with peer, the tasks on that peer you may work on), filtered by status and assignee.",
        output_schema = schema_for_output::<tasks::TasksOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_task_list(&self, Parameters(a): Parameters<tasks::ListArgs>) -> CallToolResult {
        tasks::list(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Block until a task reaches until_status (default completed) or finishes (completed, failed, canceled), up to timeout_s (default 60, max 300). Returns the task with its result. Use this instead of polling.",
        output_schema = schema_for_output::<tasks::TaskWaitOut>(),
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn loopsy_task_wait(&self, Parameters(a): Parameters<tasks::WaitArgs>) -> CallToolResult {
        tasks::wait(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Block until a context key changes (is written, deleted or expires) or timeout_s passes (default 30, max 300). Pass the written_at you last saw as until_change_from to not miss a change in between.",
        output_schema = schema_for_output::<context::WaitOut>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn loopsy_context_wait(
        &self,
        Parameters(a): Parameters<context::WaitArgs>,
    ) -> CallToolResult {
        context::wait(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Delete a context key.",
        output_schema = schema_for_output::<context::DeleteOut>(),
        annotations(destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_context_delete(
        &self,
        Parameters(a): Parameters<context::KeyArgs>,
    ) -> CallToolResult {
        context::delete(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Start a terminal session (a real PTY) here or on `peer`: shell (default), claude, codex, gemini, opencode, or custom with `command`. It keeps running when no one is attached and across daemon restarts. Drive it with loopsy_session_write / _read / _wait.",
        output_schema = schema_for_output::<SessionInfo>(),
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn loopsy_session_start(
        &self,
        Parameters(a): Parameters<sessions::StartArgs>,
    ) -> CallToolResult {
        sessions::start(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "The kinds of session that can start here (or on `peer`): shell, and each agent with whether it is installed and its auto-approve flag.",
        output_schema = schema_for_output::<sessions::KindsOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_session_kinds(
        &self,
        Parameters(a): Parameters<sessions::ListArgs>,
    ) -> CallToolResult {
        sessions::kinds(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Saved commands to start as sessions (the phone app's \"your commands\"): id, label, command, args, cwd.",
        output_schema = schema_for_output::<commands::CommandsOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_command_list(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        commands::list(&self.ctx).await
    }

    #[tool(
        description = "Save a command (new, or the one with `id`): label, command, args?, cwd?.",
        output_schema = schema_for_output::<commands::CommandsOut>()
    )]
    async fn loopsy_command_save(
        &self,
        Parameters(a): Parameters<commands::SaveArgs>,
    ) -> CallToolResult {
        commands::save(&self.ctx, a).await
    }

    #[tool(
        description = "Delete a saved command by id.",
        output_schema = schema_for_output::<commands::CommandsOut>()
    )]
    async fn loopsy_command_remove(
        &self,
        Parameters(a): Parameters<commands::RemoveArgs>,
    ) -> CallToolResult {
        commands::remove(&self.ctx, a).await
    }

    #[tool(
        description = "Terminal sessions here (or on `peer`), newest first: id, name, kind, command, size, state, exit code, last activity, attached clients.",
        output_schema = schema_for_output::<sessions::SessionsOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_session_list(
        &self,
        Parameters(a): Parameters<sessions::ListArgs>,
    ) -> CallToolResult {
        sessions::list(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "End a session's program (SIGHUP to its process group, SIGKILL 3 s later) and return its final state. The session stays listable and readable until loopsy_session_remove.",
        output_schema = schema_for_output::<SessionInfo>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn loopsy_session_stop(
        &self,
        Parameters(a): Parameters<sessions::SessionArgs>,
    ) -> CallToolResult {
        sessions::stop(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Forget a session (stopping it first if it runs): its record, final screen and scrollback.",
        output_schema = schema_for_output::<SessionInfo>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn loopsy_session_remove(
        &self,
        Parameters(a): Parameters<sessions::SessionArgs>,
    ) -> CallToolResult {
        sessions::remove(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Read a session as plain text: mode screen (default) is what a person sees now; scrollback is all kept output; since returns only the output after `cursor` (every read returns a cursor). Scrollback and since return at most 256 KiB of output per call; `more: true` means read again with the new cursor.",
        output_schema = schema_for_output::<loopsy_term::proto::ReadOut>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn loopsy_session_read(
        &self,
        Parameters(a): Parameters<sessions::ReadArgs>,
    ) -> CallToolResult {
        sessions::read(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Type into a session: `text` as typed (or as a bracketed paste with paste: true), then named `keys` such as [\"Enter\"], [\"Ctrl-C\"], [\"Esc\"], [\"Up\"].",
        output_schema = schema_for_output::<sessions::WriteOut>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn loopsy_session_write(
        &self,
        Parameters(a): Parameters<sessions::WriteArgs>,
    ) -> CallToolResult {
        sessions::write(&self.ctx, &self.caller, a).await
    }

    #[tool(
        description = "Block until a session shows `pattern` (a regex, on screen or in new output), its program exits, or it is quiet for idle_ms; at most timeout_s (default 30, max 300). Returns why it returned and the screen.",
        output_schema = schema_for_output::<WaitOut>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn loopsy_session_wait(
        &self,
        Parameters(a): Parameters<sessions::WaitArgs>,
    ) -> CallToolResult {
        sessions::wait(&self.ctx, &self.caller, a).await
    }
}

/// Pairing and trust management: only on the CLI's admin session.
#[tool_router(router = admin_router)]
impl LoopsyServer {
    #[tool(description = "Open a pairing window; returns the one-time code and addresses.", output_schema = schema_for_output::<PairTicket>())]
    async fn loopsy_pair_open(&self, Parameters(a): Parameters<PairOpenArgs>) -> CallToolResult {
        let r = admin::pair_open(&self.ctx, a).await;
        if r.is_error != Some(true) {
            self.opened_window
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }

    #[tool(description = "Wait until the open pairing window pairs a machine, or fails.", output_schema = schema_for_output::<PeerView>())]
    async fn loopsy_pair_wait(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        admin::pair_wait(&self.ctx).await
    }

    #[tool(description = "Close the pairing window.")]
    async fn loopsy_pair_close(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        admin::pair_close(&self.ctx).await
    }

    #[tool(description = "Pair with the machine at addr using the code it shows.", output_schema = schema_for_output::<PeerView>())]
    async fn loopsy_pair_with(&self, Parameters(a): Parameters<PairWithArgs>) -> CallToolResult {
        admin::pair_with(&self.ctx, a).await
    }

    #[tool(description = "Dial an address (for peers mDNS cannot see).")]
    async fn loopsy_peer_add(&self, Parameters(a): Parameters<PeerAddArgs>) -> CallToolResult {
        admin::peer_add(&self.ctx, a).await
    }

    #[tool(description = "Remove a machine from the mesh: this machine forgets it and cuts it off at once, and a signed removal tells every member to do the same (members offline now apply it when they return). here_only: forget it on this machine only.", output_schema = schema_for_output::<PeerView>())]
    async fn loopsy_peer_remove(&self, Parameters(a): Parameters<RemoveArgs>) -> CallToolResult {
        admin::peer_remove(&self.ctx, a).await
    }

    #[tool(description = "Rename a peer.", output_schema = schema_for_output::<PeerView>())]
    async fn loopsy_peer_rename(&self, Parameters(a): Parameters<RenameArgs>) -> CallToolResult {
        admin::peer_rename(&self.ctx, a).await
    }

    #[tool(description = "Grant capabilities to a peer.", output_schema = schema_for_output::<PeerView>())]
    async fn loopsy_peer_grant(&self, Parameters(a): Parameters<CapsArgs>) -> CallToolResult {
        admin::peer_caps(&self.ctx, a, true).await
    }

    #[tool(description = "Revoke capabilities from a peer; takes effect on its next call.", output_schema = schema_for_output::<PeerView>())]
    async fn loopsy_peer_revoke(&self, Parameters(a): Parameters<CapsArgs>) -> CallToolResult {
        admin::peer_caps(&self.ctx, a, false).await
    }

    #[tool(description = "Export the context: format json ({key: entry}) or automerge (the binary document, base64).", output_schema = schema_for_output::<context::ExportOut>())]
    async fn loopsy_context_export(
        &self,
        Parameters(a): Parameters<context::ExportArgs>,
    ) -> CallToolResult {
        context::export(&self.ctx, a).await
    }

    #[tool(description = "Import a context export (json or automerge) as this machine's own writes: keys absent here are added, present ones replaced only by newer entries; nothing is removed.", output_schema = schema_for_output::<context::ImportOut>())]
    async fn loopsy_context_import(
        &self,
        Parameters(a): Parameters<context::ImportArgs>,
    ) -> CallToolResult {
        context::import(&self.ctx, a).await
    }

    #[tool(description = "The phone relay link: state, relay URL, device id, last error, phone connections.", output_schema = schema_for_output::<crate::phone::LinkStatus>())]
    async fn loopsy_relay_status(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        phone::relay_status(&self.ctx).await
    }

    #[tool(description = "Re-read relay.json (written by `loopsy relay configure`) and reconnect; waits up to 10 s for the link.", output_schema = schema_for_output::<crate::phone::LinkStatus>())]
    async fn loopsy_relay_reload(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        phone::relay_reload(&self.ctx).await
    }

    #[tool(description = "Open a phone pairing: a link for the QR code and a short code the phone must type.", output_schema = schema_for_output::<crate::phone::PairOut>())]
    async fn loopsy_mobile_pair(
        &self,
        Parameters(a): Parameters<phone::MobilePairArgs>,
    ) -> CallToolResult {
        phone::mobile_pair(&self.ctx, a).await
    }

    #[tool(description = "Start (once) the local dashboard on 127.0.0.1 and return a one-time link for one browser tab.", output_schema = schema_for_output::<phone::DashboardOut>())]
    async fn loopsy_dashboard(
        &self,
        Parameters(a): Parameters<phone::DashboardArgs>,
    ) -> CallToolResult {
        phone::dashboard(&self.ctx, a).await
    }

    #[tool(description = "The phones this laptop trusts, with their live connections at the relay.", output_schema = schema_for_output::<crate::phone::PhonesOut>())]
    async fn loopsy_phone_list(&self, Parameters(_): Parameters<NoArgs>) -> CallToolResult {
        phone::phone_list(&self.ctx).await
    }

    #[tool(description = "Revoke a phone: here (which alone stops it) and at the relay.", output_schema = schema_for_output::<crate::phone::RevokeOut>())]
    async fn loopsy_phone_revoke(
        &self,
        Parameters(a): Parameters<phone::PhoneArgs>,
    ) -> CallToolResult {
        phone::phone_revoke(&self.ctx, a).await
    }

    #[tool(description = "Approve an agent's auto-approve request by id (without id: list the pending ones).", output_schema = schema_for_output::<sessions::ApprovalsOut>())]
    async fn loopsy_approve(
        &self,
        Parameters(a): Parameters<sessions::ApproveArgs>,
    ) -> CallToolResult {
        sessions::approve(&self.ctx, a).await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for LoopsyServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new("loopsy", loopsy_mesh::VERSION))
        .with_instructions(INSTRUCTIONS.to_string())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        resources::list(&self.ctx, request.and_then(|r| r.cursor)).await
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        resources::read(&self.ctx, &request.uri)
            .await
            .map(Into::into)
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if self.subs.add(&self.ctx, &request.uri).await? {
            let peer = context.peer.clone();
            let closed = peer.clone();
            tokio::spawn(resources::watch(
                self.ctx.clone(),
                self.subs.clone(),
                move |uri| {
                    let peer = peer.clone();
                    async move {
                        peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                            .await
                            .is_ok()
                    }
                },
                move || closed.is_transport_closed(),
            ));
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subs.remove(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut f = SubscriptionFilter::new();
        f.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|u| resources::parse(u).is_ok())
                .take(resources::MAX_SUBSCRIPTIONS)
                .cloned()
                .collect()
        });
        Some(f)
    }

    async fn listen(&self, sub: SubscriptionContext) -> Result<(), McpError> {
        let subs = resources::Subscriptions::default();
        for uri in sub.accepted().resource_subscriptions.iter().flatten() {
            subs.add(&self.ctx, uri).await?;
        }
        let sink = sub.sink().clone();
        tokio::select! {
            _ = sub.cancelled() => {}
            _ = resources::watch(
                self.ctx.clone(),
                subs,
                move |uri| {
                    let sink = sink.clone();
                    async move { sink.notify_resource_updated(uri).await.is_ok() }
                },
                || false,
            ) => {}
        }
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let started = Instant::now();
        let tool = request.name.to_string();
        if !self.tool_router.has_route(&tool) {
            // As the MCP spec has it: an unknown tool is a protocol error (-32602).
            return Err(McpError::invalid_params(
                format!("unknown tool {tool:?}; tools/list shows the loopsy_* tools"),
                None,
            ));
        }
        let tcc = ToolCallContext::new(self, request, context);
        let result = match self.tool_router.call(tcc).await {
            // Arguments that do not fit the schema are the model's to fix: a tool error.
            Err(e) if e.code == RpcCode::INVALID_PARAMS => Ok(CallToolResponse::Complete(
                ToolError::new(ErrorCode::InvalidArguments, e.message.to_string()).into_result(),
            )),
            // rmcp reports arguments that fail to deserialize as an unstructured tool error;
            // every loopsy tool's own errors are structured, so give these the stable code.
            Ok(CallToolResponse::Complete(r))
                if r.is_error == Some(true) && r.structured_content.is_none() =>
            {
                let text = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join(" ");
                Ok(CallToolResponse::Complete(
                    ToolError::new(ErrorCode::InvalidArguments, text).into_result(),
                ))
            }
            other => other,
        };
        let outcome = match &result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => format!(
                "error:{}",
                r.structured_content
                    .as_ref()
                    .and_then(|v| v["code"].as_str())
                    .unwrap_or("unknown")
            ),
            Ok(_) => "ok".to_string(),
            Err(e) => format!("rpc_error:{}", e.code.0),
        };
        self.ctx
            .audit()
            .record(AuditRecord::now(
                self.caller.label(),
                tool,
                outcome,
                started.elapsed(),
            ))
            .await;
        result
    }
}
