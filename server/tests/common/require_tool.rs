//! Tests that need an outside tool (ffmpeg, grpcurl, Chromium, Python's
//! grpcio, PyYAML, systemd-analyze) FAIL when it is missing, naming the tool
//! and how to install it: a machine without the tools must not show green.
//! With `LIVESLICE_ALLOW_SKIP=1` they skip instead, say so, and append a
//! line to `target/liveslice-skipped.txt` (the harness hides test output),
//! which `.ci/run` or you can print at the end of the run.
//!
//! Shared by the server's and the client's tests: `client/tests/common`
//! includes this file with `#[path]`.
#![allow(dead_code)]

use std::io::Write;

/// The environment variable that turns a missing tool into a skip.
pub const ALLOW_SKIP: &str = "LIVESLICE_ALLOW_SKIP";

/// Whether `tool` is there for `what` (a test, or a part of one). If it is
/// not: panics naming `tool` and `install`, unless `LIVESLICE_ALLOW_SKIP=1`,
/// in which case it records the skip and returns `false`.
pub fn require_tool(what: &str, tool: &str, present: bool, install: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1") {
        let line = format!("SKIPPED {what}: {tool} is missing (install: {install})");
        // Both streams: stdout shows with --nocapture or on failure,
        // stderr in some runners; the file is the summary.
        println!("{line}");
        eprintln!("{line}");
        record_skip(&line);
        return false;
    }
    panic!(
        "{what} needs {tool}, which is missing. Install it: {install}. \
         (To skip tests whose tool is missing instead, set {ALLOW_SKIP}=1; \
         skips are listed in {})",
        skipped_file().display()
    );
}

/// Whether `program args…` runs and exits 0.
pub fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `target/liveslice-skipped.txt` of the build these tests belong to.
pub fn skipped_file() -> std::path::PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`, wherever the target dir is.
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("liveslice-skipped.txt")
}

fn record_skip(line: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let entry = format!("{binary} {test}: {line}\n");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skipped_file())
    {
        let _ = f.write_all(entry.as_bytes());
    }
}
