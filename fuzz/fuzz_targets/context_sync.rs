#![no_main]
//! cargo-fuzz target: loopsy_mesh::fuzzing::context_sync (context sync frames and automerge
//! sync messages from a peer, documents from `ctx import`). automerge panics on some malformed
//! input; the daemon catches those (`loopsy_mesh::context::guard`), so a panic inside that
//! guard unwinds to it here too. Any other panic aborts: a finding.
libfuzzer_sys::fuzz_target!(
    init: {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !loopsy_mesh::context::guard::inside() {
                abort(info);
            }
        }));
    },
    |data: &[u8]| loopsy_mesh::fuzzing::context_sync(data)
);
