//! Terminal output: colour that respects NO_COLOR and non-terminals (via anstream).

use anstyle::{AnsiColor, Style};

/// Green, for success.
pub const OK: Style = AnsiColor::Green.on_default().bold();
/// Yellow, for warnings.
pub const WARN: Style = AnsiColor::Yellow.on_default().bold();
/// Red, for failures.
pub const BAD: Style = AnsiColor::Red.on_default().bold();
/// Dim, for details.
pub const DIM: Style = Style::new().dimmed();
/// Bold, for names.
pub const BOLD: Style = Style::new().bold();

/// `text` in `style` (anstream strips it when colour is off).
pub fn paint(style: Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

/// Print a JSON value, pretty.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    anstream::println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
