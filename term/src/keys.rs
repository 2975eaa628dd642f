//! Named keys an agent can send (`Enter`, `Esc`, `Ctrl-C`, arrows…) as the bytes a terminal
//! would send, honouring the application-cursor mode full-screen programs switch on.

/// Why a key name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown key {0:?}: use Enter, Tab, Esc, Backspace, Delete, Up, Down, Left, Right, Home, End, PageUp, PageDown, F1-F12, Space or Ctrl-<letter>"
)]
pub struct UnknownKey(pub String);

/// The bytes for `name` (case-insensitive; `C-c`, `Ctrl+C` and `Ctrl-C` all work).
pub fn key_bytes(name: &str, app_cursor: bool) -> Result<Vec<u8>, UnknownKey> {
    let n = name.trim().to_ascii_lowercase().replace(['+', '_'], "-");
    let arrow = |c: u8| {
        if app_cursor {
            vec![0x1b, b'O', c]
        } else {
            vec![0x1b, b'[', c]
        }
    };
    let b: Vec<u8> = match n.as_str() {
        "enter" | "return" => b"\r".to_vec(),
        "tab" => b"\t".to_vec(),
        "esc" | "escape" => b"\x1b".to_vec(),
        "backspace" | "bs" => b"\x7f".to_vec(),
        "delete" | "del" => b"\x1b[3~".to_vec(),
        "space" => b" ".to_vec(),
        "up" => arrow(b'A'),
        "down" => arrow(b'B'),
        "right" => arrow(b'C'),
        "left" => arrow(b'D'),
        "home" => arrow(b'H'),
        "end" => arrow(b'F'),
        "pageup" | "pgup" => b"\x1b[5~".to_vec(),
        "pagedown" | "pgdn" => b"\x1b[6~".to_vec(),
        "f1" => b"\x1bOP".to_vec(),
        "f2" => b"\x1bOQ".to_vec(),
        "f3" => b"\x1bOR".to_vec(),
        "f4" => b"\x1bOS".to_vec(),
        "f5" => b"\x1b[15~".to_vec(),
        "f6" => b"\x1b[17~".to_vec(),
        "f7" => b"\x1b[18~".to_vec(),
        "f8" => b"\x1b[19~".to_vec(),
        "f9" => b"\x1b[20~".to_vec(),
        "f10" => b"\x1b[21~".to_vec(),
        "f11" => b"\x1b[23~".to_vec(),
        "f12" => b"\x1b[24~".to_vec(),
        other => {
            let letter = other
                .strip_prefix("ctrl-")
                .or_else(|| other.strip_prefix("c-"))
                .filter(|l| l.len() == 1)
                .and_then(|l| l.bytes().next());
            match letter {
                Some(c @ b'a'..=b'z') => vec![c - b'a' + 1],
                Some(b'[') => vec![0x1b],
                Some(b'\\') => vec![0x1c],
                Some(b']') => vec![0x1d],
                _ => return Err(UnknownKey(name.to_string())),
            }
        }
    };
    Ok(b)
}

/// Wrap pasted text in bracketed-paste markers (for programs that asked for them).
pub fn bracketed(text: &str) -> Vec<u8> {
    // A paste must not be able to end the bracket early.
    let clean = text.replace("\x1b[201~", "");
    let mut v = b"\x1b[200~".to_vec();
    v.extend_from_slice(clean.as_bytes());
    v.extend_from_slice(b"\x1b[201~");
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_terminal_bytes() {
        assert_eq!(key_bytes("Enter", false).unwrap(), b"\r");
        assert_eq!(key_bytes("Ctrl-C", false).unwrap(), [3]);
        assert_eq!(key_bytes("c-d", false).unwrap(), [4]);
        assert_eq!(key_bytes("ctrl+z", false).unwrap(), [26]);
        assert_eq!(key_bytes("Up", false).unwrap(), b"\x1b[A");
        assert_eq!(key_bytes("Up", true).unwrap(), b"\x1bOA");
        assert_eq!(key_bytes("Esc", false).unwrap(), b"\x1b");
        assert!(key_bytes("Hyper-Q", false).is_err());
        assert!(key_bytes("ctrl-", false).is_err());
    }

    #[test]
    fn a_paste_cannot_close_its_own_bracket() {
        assert_eq!(bracketed("a\x1b[201~b"), b"\x1b[200~ab\x1b[201~");
    }
}
