//! The scrollback ring: the last `cap` bytes of a session's output, addressed by absolute
//! offsets so a reader can ask for "everything since my cursor" and learn if it missed some.

use std::collections::VecDeque;

/// Raw output bytes, capped; `end()` counts every byte ever pushed.
#[derive(Debug)]
pub struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
    end: u64,
}

/// Bytes since an offset.
#[derive(Debug, PartialEq, Eq)]
pub struct Since {
    /// The bytes still held from the requested offset (or from the oldest kept byte).
    pub bytes: Vec<u8>,
    /// Absolute offset of the first returned byte.
    pub start: u64,
    /// True when bytes between the requested offset and `start` were already dropped.
    pub gap: bool,
}

impl Ring {
    /// An empty ring holding at most `cap` bytes (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            cap: cap.max(1),
            end: 0,
        }
    }

    /// Append output, dropping the oldest bytes beyond the cap.
    pub fn push(&mut self, data: &[u8]) {
        self.end += data.len() as u64;
        let data = if data.len() > self.cap {
            &data[data.len() - self.cap..]
        } else {
            data
        };
        let over = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.buf.extend(data);
    }

    /// Absolute offset one past the newest byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Absolute offset of the oldest byte kept.
    pub fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    /// Everything held.
    pub fn all(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// The bytes from `offset` on (clamped to what is held).
    pub fn since(&self, offset: u64) -> Since {
        self.since_max(offset, usize::MAX)
    }

    /// At most `max` bytes from `offset` on (copies only those).
    pub fn since_max(&self, offset: u64, max: usize) -> Since {
        let start = offset.clamp(self.start(), self.end);
        let skip = (start - self.start()) as usize;
        let n = (self.buf.len() - skip).min(max);
        Since {
            bytes: self.buf.range(skip..skip + n).copied().collect(),
            start,
            gap: offset < self.start(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_and_reports_gaps() {
        let mut r = Ring::new(4);
        r.push(b"ab");
        assert_eq!(r.since(0).bytes, b"ab");
        r.push(b"cdef");
        assert_eq!(r.all(), b"cdef");
        assert_eq!((r.start(), r.end()), (2, 6));
        let s = r.since(1);
        assert!(s.gap);
        assert_eq!((s.bytes.as_slice(), s.start), (&b"cdef"[..], 2));
        let s = r.since(5);
        assert!(!s.gap);
        assert_eq!(s.bytes, b"f");
        assert!(r.since(99).bytes.is_empty());
        assert_eq!(r.since_max(2, 2).bytes, b"cd");
        r.push(b"0123456789");
        assert_eq!(r.all(), b"6789");
        assert_eq!(r.end(), 16);
    }
}
