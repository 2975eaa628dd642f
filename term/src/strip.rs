//! Terminal output to plain text: escape sequences removed, carriage returns resolved, so an
//! agent reads what a person would see in the scrollback.

/// Plain text of raw terminal output.
pub fn plain(raw: &[u8]) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Text,
        Esc,
        Csi,
        Osc,
        OscEsc,
        Skip1,
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut line_start = 0usize;
    let mut st = St::Text;
    // A carriage return not followed by a newline starts the line over (progress bars show
    // their last state, as on a terminal).
    let mut cr = false;
    for &b in raw {
        if cr && b != b'\r' && b != b'\n' && st == St::Text {
            out.truncate(line_start);
        }
        if b != b'\r' {
            cr = false;
        }
        st = match (st, b) {
            (St::Text, 0x1b) => St::Esc,
            (St::Text, b'\r') => {
                cr = true;
                St::Text
            }
            (St::Text, b'\n') => {
                // Trailing spaces on a line are noise from cursor movement.
                while out.len() > line_start && out.last() == Some(&b' ') {
                    out.pop();
                }
                out.push(b'\n');
                line_start = out.len();
                St::Text
            }
            (St::Text, 0x08) => {
                if out.len() > line_start {
                    out.pop();
                }
                St::Text
            }
            (St::Text, b'\t') => {
                out.push(b'\t');
                St::Text
            }
            (St::Text, b) if b < 0x20 || b == 0x7f => St::Text,
            (St::Text, b) => {
                out.push(b);
                St::Text
            }
            (St::Esc, b'[') => St::Csi,
            (St::Esc, b']' | b'P' | b'_' | b'^') => St::Osc,
            (St::Esc, b'(' | b')' | b'*' | b'+' | b'#' | b'%') => St::Skip1,
            (St::Esc, _) => St::Text,
            (St::Skip1, _) => St::Text,
            (St::Csi, 0x40..=0x7e) => St::Text,
            (St::Csi, _) => St::Csi,
            (St::Osc, 0x07) => St::Text,
            (St::Osc, 0x1b) => St::OscEsc,
            (St::Osc, _) => St::Osc,
            (St::OscEsc, b'\\') => St::Text,
            (St::OscEsc, _) => St::Osc,
        };
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn escapes_go_and_text_stays() {
        assert_eq!(plain(b"\x1b[1;31mred\x1b[0m ok\r\n"), "red ok\n");
        assert_eq!(plain(b"\x1b]0;title\x07hi"), "hi");
        assert_eq!(plain(b"\x1b]8;;http://x\x1b\\link"), "link");
        assert_eq!(plain(b"ab\x08c  \r\n\x1b(Bz"), "ac\nz");
        assert_eq!(plain(b"\x1b[?1049h\x1b[Hfull"), "full");
        assert_eq!(plain(b"10%\r20%\r30%\r\ndone\n"), "30%\ndone\n");
    }
}
