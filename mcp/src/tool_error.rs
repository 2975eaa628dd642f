//! Tool errors with a stable code a model (or script) can act on.

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;

/// Stable error codes. Never renamed; new ones are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Arguments did not match the tool's input schema or were out of range.
    InvalidArguments,
    /// The named thing does not exist.
    NotFound,
    /// The caller may not do this.
    PermissionDenied,
    /// The daemon is shutting down or a part of it has stopped.
    Unavailable,
    /// A bug or an OS failure; the message says what.
    Internal,
    /// Someone else got there first (a task another worker claimed); the message says who.
    Conflict,
    /// An update to a task the caller has not claimed: claim it first.
    NotClaimed,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 7] = [
        Self::InvalidArguments,
        Self::NotFound,
        Self::PermissionDenied,
        Self::Unavailable,
        Self::Internal,
        Self::Conflict,
        Self::NotClaimed,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArguments => "invalid_arguments",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Conflict => "conflict",
            Self::NotClaimed => "not_claimed",
        }
    }
}

/// A failed tool call: reported as `isError: true` with `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    /// Stable code.
    pub code: ErrorCode,
    /// What happened and what to do next.
    pub message: String,
}

impl ToolError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The code as its wire string (for the audit log).
    pub fn code_str(&self) -> String {
        serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "internal".into())
    }

    /// As an MCP tool result.
    pub fn into_result(self) -> CallToolResult {
        let code = self.code_str();
        let mut r = CallToolResult::error(vec![ContentBlock::text(format!(
            "error [{code}]: {}",
            self.message
        ))]);
        r.structured_content = Some(serde_json::json!({ "code": code, "message": self.message }));
        r
    }
}

/// A successful result: a short text for people and models, and the structured value.
pub fn success<T: Serialize>(summary: impl Into<String>, value: &T) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => {
            let mut r = CallToolResult::success(vec![ContentBlock::text(summary.into())]);
            r.structured_content = Some(v);
            r
        }
        Err(e) => {
            ToolError::new(ErrorCode::Internal, format!("cannot encode result: {e}")).into_result()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_result_carries_code() {
        let r = ToolError::new(ErrorCode::NotFound, "no such peer \"kai\"").into_result();
        assert_eq!(r.is_error, Some(true));
        let sc = r.structured_content.unwrap_or_default();
        assert_eq!(sc["code"], "not_found");
        assert_eq!(sc["message"], "no such peer \"kai\"");
    }
}

#[cfg(test)]
mod doc_tests {
    use super::ErrorCode;

    /// The codes README lists, AGENTS.md's advice table and the error schema are the codes
    /// there are.
    #[test]
    fn every_code_is_documented() {
        let readme = include_str!("../../README.md");
        let agents = include_str!("../../agents-spec/AGENTS.md");
        let schema = include_str!("../../agents-spec/schemas/tool_error.schema.json");
        let list = readme
            .split("The `code` is stable:")
            .nth(1)
            .and_then(|r| r.split(". An unknown").next())
            .unwrap_or_default();
        for c in ErrorCode::ALL {
            let code = format!("`{}`", c.as_str());
            assert!(list.contains(&code), "README's code list lacks {code}");
            assert!(
                agents.contains(&format!("| {code} |")),
                "AGENTS.md's table lacks {code}"
            );
            assert!(
                schema.contains(&format!("\"{}\"", c.as_str())),
                "tool_error.schema.json lacks {code}"
            );
        }
        assert_eq!(
            list.matches('`').count(),
            2 * ErrorCode::ALL.len(),
            "{list}"
        );
    }
}
