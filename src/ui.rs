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

/// Characters a peer could use to act on the terminal or hide text: C0 controls, DEL, C1
/// controls, and Unicode's invisible and direction-changing format characters.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{061C}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

static RAW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--raw`: print peers' text as it is.
pub fn set_raw(raw: bool) {
    RAW.store(raw, std::sync::atomic::Ordering::Relaxed);
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if RAW.load(std::sync::atomic::Ordering::Relaxed)
        || !s.chars().any(|c| unsafe_char(c) && !keep(c))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) && !keep(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Text from a peer (a message body, a context value), safe to print: escape sequences and
/// other control characters are shown escaped (`\x1b`), newlines and tabs kept.
pub fn safe_text(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

/// One line from a peer (a name, a key, a file name), safe to print: every control character
/// escaped, newlines included.
pub fn safe_line(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, |_| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_cannot_drive_the_terminal() {
        assert_eq!(safe_text("plain\n\ttext €"), "plain\n\ttext €");
        assert_eq!(
            safe_text("\x1b]0;pwned\x07ok\x1b[8mhidden\r$ "),
            "\\x1b]0;pwned\\x07ok\\x1b[8mhidden\\r$ "
        );
        assert_eq!(safe_line("a\nb\u{9b}c"), "a\\nb\\x9bc");
        assert_eq!(safe_line("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert!(matches!(safe_line("fine"), std::borrow::Cow::Borrowed(_)));
    }
}
