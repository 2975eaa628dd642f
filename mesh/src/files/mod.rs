//! File transfer between trusted peers over a raw libp2p stream (`/loopsy/file/1`): streamed
//! in chunks (bounded memory whatever the size), BLAKE3-checked end to end, written to a
//! `.part` file and renamed only after the checksum matches, resumable after a cut.

mod flush;
mod keep;
mod policy;
mod proto;
mod server;
mod sink;
mod transfer;

pub use keep::{CopyOpts, Keep};
pub use policy::{
    DEFAULT_DENIED, DEFAULT_WRITE_DENIED, DEFAULT_WRITE_DENIED_ANYWHERE, FilesConfig, PathError,
    PathPolicy,
};
pub use proto::{Entry, FILE_PROTOCOL, FileRequest, decode_request};
pub use server::serve;
pub use transfer::{FileError, Progress, TransferOutcome, list, pull, push};
