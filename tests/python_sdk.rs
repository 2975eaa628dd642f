//! Runs the Python suites in `tests/py` (official `mcp` SDK as the client) against the binary
//! under test. The interpreter comes from `scripts/setup-test` (`.venv/`) or
//! `LOOPSY_TEST_PYTHON`; a missing one is a failure, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LOOPSY_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `scripts/setup-test` (installs Python `mcp`, pytest, jsonschema)",
        venv.display()
    );
    venv
}

#[test]
fn python_mcp_sdk_suites() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .args([
            "-m",
            "pytest",
            "tests/py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rA",
        ])
        .current_dir(&root)
        .env("LOOPSY_BIN", env!("CARGO_BIN_EXE_loopsy"))
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pytest failed:\n{stdout}");
    assert!(
        !stdout.contains(" skipped"),
        "skipped Python tests are not allowed:\n{stdout}"
    );
    assert!(stdout.contains(" passed"), "no Python test ran:\n{stdout}");
}
