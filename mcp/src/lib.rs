//! loopsy-mcp: the MCP tool surface every client uses — agents through `loopsy mcp`, the CLI,
//! and (optionally) HTTP clients — plus the local control socket and the audit log.

pub mod attach;
pub mod audit;
pub mod client;
pub mod control;
pub mod ctx;
pub mod exec_pipe;
pub mod http;
pub mod listener;
pub mod phone;
pub mod resources;
pub mod schema;
pub mod server;
pub mod tool_error;
pub mod tools;

pub use audit::AuditLog;
pub use ctx::{Caller, DaemonCtx};
pub use server::LoopsyServer;
pub use tool_error::{ErrorCode, ToolError};
