//! Accepts `/loopsy/file/1` streams: only from trusted peers, each checked against the
//! capabilities this machine granted it.

use std::time::Duration;

use futures::StreamExt;
use libp2p::StreamProtocol;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::{Instrument, debug, info, info_span, warn};

use super::policy::PathPolicy;
use super::proto::FILE_PROTOCOL;
use super::transfer::{Access, handle};
use crate::NodeHandle;
use crate::trust::Capability;

/// Longest any one stream may stay open (a stalled peer cannot pin a task forever).
const MAX_STREAM_TIME: Duration = Duration::from_secs(6 * 3600);

/// Serve file streams until the node stops.
pub async fn serve(mut control: libp2p_stream::Control, node: NodeHandle, policy: PathPolicy) {
    let mut incoming = match control.accept(StreamProtocol::new(FILE_PROTOCOL)) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "file protocol already registered");
            return;
        }
    };
    while let Some((peer, stream)) = incoming.next().await {
        let node = node.clone();
        let policy = policy.clone();
        tokio::spawn(
            async move {
                let Some((_, caps)) = node.peer_caps(peer).await else {
                    warn!("file stream from an untrusted peer dropped");
                    return;
                };
                let mut s = stream.compat();
                let right = async |cap: Capability| {
                    if caps.contains(&cap) {
                        Ok(())
                    } else {
                        Err(node.refusal(peer, cap).await)
                    }
                };
                let access = Access {
                    read: right(Capability::FilesRead).await,
                    write: right(Capability::FilesWrite).await,
                };
                // The stream lives only as long as the rights it was admitted with: a revoke
                // (or removal) mid-transfer ends it at once. The peer sees the stream reset;
                // its retry is then refused with the reason.
                let admitted: Vec<Capability> = [Capability::FilesRead, Capability::FilesWrite]
                    .into_iter()
                    .filter(|c| caps.contains(c))
                    .collect();
                let r = tokio::select! {
                    r = tokio::time::timeout(
                        MAX_STREAM_TIME,
                        handle(&mut s, &policy, &access),
                    ) => r,
                    lost = node.revoked(peer, &admitted) => {
                        info!(?lost, "file stream ended: its capability was revoked");
                        return;
                    }
                };
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(error = %e, "file stream ended"),
                    Err(_) => debug!("file stream timed out"),
                }
            }
            .instrument(info_span!("file", %peer)),
        );
    }
}
