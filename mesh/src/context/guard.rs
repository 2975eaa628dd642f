//! Bytes from a peer or a file, before automerge decodes them. Fuzzing found automerge 0.12
//! panicking on some malformed input (`testdata/automerge-decoder-panic.bin`) and allocating
//! without bound on a 150-byte "bundle" chunk (`testdata/automerge-bundle-oom.bin`). So:
//! - [`check_chunks`] lets through only the chunk kinds the mesh itself sends (documents and
//!   changes; sync sends a document first, then changes), with lengths that fit: no bundles
//!   and no separately compressed changes, whose decoders are where the unbounded
//!   allocations are;
//! - a document chunk's compressed (deflated) columns are inflated here first, under a cap
//!   ([`MAX_INFLATED`] in all): automerge inflates them without one, and a sync message of
//!   32 MiB could otherwise ask for about 32 GiB (a zip bomb that aborts the daemon);
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
        if kind == DOCUMENT
            && let Err(why) = check_document(&rest[start..end])
        {
            return bad(why);
        }
        rest = &rest[end..];
    }
    Ok(())
}

/// Most bytes the compressed columns of one document chunk may inflate to, in all.
pub const MAX_INFLATED: u64 = 128 << 20;
/// A column spec's "deflated" bit (automerge's binary format).
const DEFLATE: u64 = 0b1000;

/// Walk a document chunk's body far enough to find its columns (actors, heads, the change
/// and op column metadata, then the columns), and inflate each compressed one under the
/// budget; the bytes inflated. Counts are checked against the bytes left before any loop runs on them.
fn check_document(body: &[u8]) -> Result<u64, &'static str> {
    let mut r = body;
    let leb = |r: &mut &[u8]| -> Result<u64, &'static str> {
        let (v, used) = leb128(r).ok_or("bad number in a document")?;
        *r = &r[used..];
        Ok(v)
    };
    let take = |r: &mut &'_ [u8], n: u64| -> Result<(), &'static str> {
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= r.len())
            .ok_or("document shorter than it says")?;
        *r = &r[n..];
        Ok(())
    };
    // Each actor takes at least its one-byte length.
    let actors = leb(&mut r)?;
    if actors > r.len() as u64 {
        return Err("document shorter than it says");
    }
    for _ in 0..actors {
        let n = leb(&mut r)?;
        take(&mut r, n)?;
    }
    let heads = leb(&mut r)?;
    take(&mut r, heads.checked_mul(32).ok_or("too many heads")?)?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        // Each column's metadata takes at least two bytes.
        let n = leb(&mut r)?;
        if n > r.len() as u64 / 2 {
            return Err("document shorter than it says");
        }
        for _ in 0..n {
            let spec = leb(&mut r)?;
            let len = leb(&mut r)?;
            columns.push((spec, len));
        }
    }
    let mut budget = MAX_INFLATED;
    for (spec, len) in columns {
        let data = r
            .get(..usize::try_from(len).unwrap_or(usize::MAX))
            .ok_or("document shorter than its columns")?;
        r = &r[data.len()..];
        if spec & DEFLATE != 0 {
            use std::io::Read;
            let mut inflated = flate2::bufread::DeflateDecoder::new(data).take(budget + 1);
            let n = std::io::copy(&mut inflated, &mut std::io::sink())
                .map_err(|_| "a compressed column does not inflate")?;
            budget = budget
                .checked_sub(n)
                .ok_or("compressed columns inflate past 128 MiB")?;
        }
    }
    Ok(MAX_INFLATED - budget)
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

    /// A chunk header around `body` (the checksum is not looked at here).
    fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut c = MAGIC.to_vec();
        c.extend_from_slice(&[0; 4]);
        c.push(kind);
        let mut n = body.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            c.push(if n == 0 { b } else { b | 0x80 });
            if n == 0 {
                break;
            }
        }
        c.extend_from_slice(body);
        c
    }

    /// A document whose one change column is deflated: `inflated` zero bytes.
    fn deflated_document(inflated: usize) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..inflated >> 20 {
            z.write_all(&zeros).unwrap();
        }
        let data = z.finish().unwrap();
        // No actors, no heads; one change column (id 1, type 0, deflated) of data.len()
        // bytes; no op columns; then the data.
        let mut body = vec![0, 0, 1];
        let leb = |mut n: usize, out: &mut Vec<u8>| loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { b } else { b | 0x80 });
            if n == 0 {
                break;
            }
        };
        leb((1 << 4) | DEFLATE as usize, &mut body);
        leb(data.len(), &mut body);
        body.push(0);
        body.extend_from_slice(&data);
        chunk(DOCUMENT, &body)
    }

    /// A document whose compressed columns would inflate to gigabytes is refused before
    /// automerge sees it; one within the cap, and real saved documents with compressed
    /// columns, pass.
    #[test]
    fn a_compressed_document_that_inflates_too_far_is_refused() {
        let bomb = deflated_document(129 << 20);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let err = check_chunks(&bomb).unwrap_err().to_string();
        assert!(err.contains("inflate past 128 MiB"), "{err}");
        assert!(check_chunks(&deflated_document(1 << 20)).is_ok());
        // automerge compresses columns past a few hundred bytes: a real document with many
        // keys has some, and passes.
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        for i in 0..2000 {
            let _ = doc.put(automerge::ROOT, format!("key-{i}"), "some value or other");
        }
        let saved = doc.save();
        assert!(check_chunks(&saved).is_ok());
        let (len, used) = leb128(&saved[9..]).unwrap();
        let body = &saved[9 + used..9 + used + len as usize];
        assert!(check_document(body).unwrap() > 0, "no compressed column");
        assert!(automerge::AutoCommit::load(&saved).is_ok());
        // Counts larger than the bytes left are refused without looping on them.
        let huge = chunk(DOCUMENT, &[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(check_chunks(&huge).is_err());
    }
}
