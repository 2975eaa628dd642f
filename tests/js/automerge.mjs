// Interop with the JS automerge package (used by tests/context.rs).
//   node automerge.mjs read FILE    print {key: value} of a saved document as JSON
//   node automerge.mjs write FILE   save a document with JS string, number and object values
import { readFileSync, writeFileSync } from "node:fs";
import * as Automerge from "@automerge/automerge";

const [cmd, file] = process.argv.slice(2);
if (cmd === "read") {
  const doc = Automerge.load(new Uint8Array(readFileSync(file)));
  const out = {};
  for (const [k, v] of Object.entries(doc)) {
    // A Rust scalar string arrives as ImmutableString; a JS string is text: read both.
    out[k] = typeof v === "object" && v !== null && "val" in v ? v.val : String(v);
  }
  console.log(JSON.stringify(out));
} else if (cmd === "write") {
  let doc = Automerge.init();
  doc = Automerge.change(doc, (d) => {
    d.js_text = "typed in js";
    d.js_number = 7;
  });
  writeFileSync(file, Automerge.save(doc));
} else {
  console.error("usage: automerge.mjs read|write FILE");
  process.exit(2);
}
