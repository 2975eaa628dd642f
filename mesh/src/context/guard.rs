//! Bytes from a peer or a file, before automerge decodes them. Fuzzing found automerge 0.12
//! panicking on some malformed input (`testdata/automerge-decoder-panic.bin`) and allocating
//! without bound on a 150-byte "bundle" chunk (`testdata/automerge-bundle-oom.bin`). So:
//! - [`check_chunks`] lets through only the chunk kinds the mesh itself sends (documents and
//!   changes; sync sends a document first, then changes), with lengths that fit: no bundles
//!   and no separately compressed changes, whose decoders are where the unbounded
//!   allocations are;
//! - every decode and load runs inside [`no_panic`], so a panic is refused with an error and
//!   the store's thread lives on. (A sync message's changes are each parsed before any is
//!   applied, so a document is never left half-changed by one.)

use std::cell::Cell;

use super::ContextError;

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside [`no_panic`] (a fuzz target's panic hook lets such a panic
/// unwind to it instead of counting it as a finding: that is the daemon's own handling).
pub fn inside() -> bool {
    INSIDE.with(Cell::get)
}

/// Run `f`, turning a panic inside it into an `Invalid` error naming `what`.
pub fn no_panic<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, ContextError>,
) -> Result<T, ContextError> {
    let was = INSIDE.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    INSIDE.with(|c| c.set(was));
    r.unwrap_or_else(|_| {
        tracing::warn!("{what} could not be decoded (the decoder panicked): refused");
        Err(ContextError::Invalid(format!(
            "{what} is malformed (automerge could not decode it)"
        )))
    })
}

/// automerge's chunk header magic.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk kinds the mesh sends: a whole document, one change.
const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;

/// Check that `bytes` is a sequence of whole document or change chunks (magic, checksum,
/// kind, LEB128 length, that many bytes), and nothing else.
pub fn check_chunks(bytes: &[u8]) -> Result<(), ContextError> {
    let bad = |why: &str| {
        Err(ContextError::Invalid(format!(
            "automerge data refused: {why}"
        )))
    };
    let mut rest = bytes;
    if rest.is_empty() {
        return bad("empty");
    }
    while !rest.is_empty() {
        if rest.len() < 10 || rest[..4] != MAGIC {
            return bad("not an automerge chunk");
        }
        let kind = rest[8];
        if kind != DOCUMENT && kind != CHANGE {
            return bad(&format!(
                "chunk kind {kind} (only documents and changes are taken)"
            ));
        }
        let (len, used) = match leb128(&rest[9..]) {
            Some(v) => v,
            None => return bad("bad chunk length"),
        };
        let start = 9 + used;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e <= rest.len());
        let Some(end) = end else {
            return bad("chunk longer than the data");
        };
        rest = &rest[end..];
    }
    Ok(())
}

/// An unsigned LEB128 number at the start of `b`, and how many bytes it took.
fn leb128(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().take(10).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_document_and_change_chunks_pass() {
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        let _ = doc.put(automerge::ROOT, "k", "v");
        let saved = doc.save();
        assert!(check_chunks(&saved).is_ok());
        let change = doc.get_last_local_change().map(|c| c.raw_bytes().to_vec());
        if let Some(c) = change {
            let mut two = c.clone();
            two.extend_from_slice(&c);
            assert!(check_chunks(&two).is_ok());
        }
        assert!(check_chunks(include_bytes!("testdata/automerge-bundle-oom.bin")).is_err());
        assert!(check_chunks(&saved[..saved.len() - 1]).is_err());
        assert!(check_chunks(b"").is_err());
        assert!(check_chunks(b"garbage bytes").is_err());
    }
}
