// The end-to-end layer: loopsy-relay's Rust (Noise via snow) compiled to wasm. The same code
// the daemon and the tests run, not a JavaScript re-implementation.

import init from "../build/pkg/loopsy_relay_web.js";

export { Session, generateSecret, publicKey, parseLink } from "../build/pkg/loopsy_relay_web.js";

let loading;

/** Load the module once. */
export function ready() {
  loading ??= init({ module_or_path: new URL("./loopsy.wasm", import.meta.url) });
  return loading;
}
