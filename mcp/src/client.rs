//! The client side of the control socket, used by the CLI and the `loopsy mcp` bridge.

use std::path::Path;

use loopsy_sys::ipc::{ReadHalf, WriteHalf};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::io::BufReader;
use tokio::sync::mpsc::UnboundedSender;

use crate::control::{self, ControlError, Verb, Welcome};

/// Why the daemon could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket.
    #[error("loopsy is not running (no daemon on {0}); start it with `loopsy start`")]
    NotRunning(String),
    /// The hello failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The MCP exchange failed.
    #[error("MCP: {0}")]
    Mcp(String),
    /// The daemon closed the session mid-call (it stopped or restarted).
    #[error(
        "the local daemon went away during the command (it stopped or restarted; `loopsy status` tells): what was under way may not have finished"
    )]
    DaemonGone,
}

/// Connect and complete the hello for `verb`; returns the socket halves after the welcome.
pub async fn connect(
    socket: &Path,
    verb: Verb,
) -> Result<(BufReader<ReadHalf>, WriteHalf, Welcome), ClientError> {
    let stream = match loopsy_sys::ipc::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(socket.display().to_string()));
        }
        Err(e) => return Err(ClientError::Control(e.into())),
    };
    let (r, mut w) = loopsy_sys::ipc::split(stream);
    let mut r = BufReader::new(r);
    let welcome = control::handshake(&mut r, &mut w, verb).await?;
    Ok((r, w, welcome))
}

/// Send a one-shot verb (`ping`, `shutdown`, `reload-key`) and return the welcome.
pub async fn request(socket: &Path, verb: Verb) -> Result<Welcome, ClientError> {
    connect(socket, verb).await.map(|(_, _, w)| w)
}

/// The CLI's client side: forwards progress notifications to whoever shows them.
#[derive(Clone)]
pub struct CliHandler {
    info: ClientConfig,
    progress: Option<UnboundedSender<ProgressNotificationParam>>,
}

impl ClientHandler for CliHandler {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    async fn on_progress(
        &self,
        p: ProgressNotificationParam,
        _ctx: NotificationContext<RoleClient>,
    ) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(p);
        }
    }
}

/// An MCP client session over the control socket.
pub struct McpClient {
    service: RunningService<RoleClient, CliHandler>,
    /// What the daemon said in its hello.
    pub welcome: Welcome,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("welcome", &self.welcome)
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// Connect, hello, and initialize MCP as the CLI (admin tools included).
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        Self::connect_with_progress(socket, None).await
    }

    /// As [`McpClient::connect`], sending every progress notification to `progress`.
    pub async fn connect_with_progress(
        socket: &Path,
        progress: Option<UnboundedSender<ProgressNotificationParam>>,
    ) -> Result<Self, ClientError> {
        let (r, w, welcome) = connect(socket, Verb::Admin).await?;
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("loopsy-cli", loopsy_mesh::VERSION),
        );
        let service = CliHandler { info, progress }
            .serve((r, w))
            .await
            .map_err(|e| match e {
                rmcp::service::ClientInitializeError::ConnectionClosed(_)
                | rmcp::service::ClientInitializeError::TransportError { .. } => {
                    ClientError::DaemonGone
                }
                other => ClientError::Mcp(other.to_string()),
            })?;
        Ok(Self { service, welcome })
    }

    /// Call a tool. A tool-level error comes back as `Ok` with `is_error`.
    pub async fn call(
        &self,
        name: &'static str,
        args: serde_json::Value,
    ) -> Result<CallToolResult, ClientError> {
        let mut params = CallToolRequestParams::new(name);
        if let serde_json::Value::Object(map) = args {
            params = params.with_arguments(map);
        }
        self.service
            .peer()
            .call_tool(params)
            .await
            .map_err(|e| match e {
                rmcp::ServiceError::TransportClosed | rmcp::ServiceError::TransportSend(_) => {
                    ClientError::DaemonGone
                }
                other => ClientError::Mcp(other.to_string()),
            })
    }

    /// Close the session.
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }
}
