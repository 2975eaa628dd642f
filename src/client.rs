//! The CLI's MCP session with the daemon (admin verb: agent tools plus pairing and trust).

use anyhow::{Context, bail};
use loopsy_mcp::client::{ClientError, McpClient};
use loopsy_mesh::Home;
use serde_json::Value;

/// A blocking wrapper: a small runtime and one MCP session.
pub struct Session {
    rt: tokio::runtime::Runtime,
    client: Option<McpClient>,
}

/// A tool that ran and failed: its stable code and message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ToolFailure {
    /// Stable code.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

impl Session {
    /// Connect to the daemon of `home`.
    pub fn connect(home: &Home) -> anyhow::Result<Self> {
        Self::connect_with_progress(home, None)
    }

    /// As [`Session::connect`], forwarding progress notifications to `progress`.
    pub fn connect_with_progress(
        home: &Home,
        progress: Option<
            tokio::sync::mpsc::UnboundedSender<rmcp::model::ProgressNotificationParam>,
        >,
    ) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt
            .block_on(McpClient::connect_with_progress(&home.socket(), progress))
            .map_err(|e| match e {
                ClientError::NotRunning(_) | ClientError::DaemonGone => anyhow::anyhow!("{e}"),
                other => anyhow::Error::new(other).context("cannot talk to the daemon"),
            })?;
        Ok(Self {
            rt,
            client: Some(client),
        })
    }

    /// Call `tool`; returns its structured content, or the tool's failure as an error.
    pub fn call(&self, tool: &'static str, args: Value) -> anyhow::Result<Value> {
        let client = self.client.as_ref().context("session closed")?;
        let r = self.rt.block_on(client.call(tool, args))?;
        let value = r.structured_content.unwrap_or(Value::Null);
        if r.is_error == Some(true) {
            return Err(ToolFailure {
                code: value["code"].as_str().unwrap_or("unknown").to_string(),
                message: value["message"]
                    .as_str()
                    .unwrap_or("the tool failed")
                    .to_string(),
            }
            .into());
        }
        if value.is_null() {
            bail!("{tool} returned no structured content");
        }
        Ok(value)
    }

    /// Run a future on the session's runtime (for Ctrl-C handling around long calls).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The client (for racing a call against a signal).
    pub fn client(&self) -> Option<&McpClient> {
        self.client.as_ref()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            self.rt.block_on(c.close());
        }
    }
}
