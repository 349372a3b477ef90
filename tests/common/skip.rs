//! Tests that need a tool or a data file: in CI (`CI=true`) a missing one fails the test; elsewhere the test prints
//! a visible `SKIPPED: <test>: <why>` line and returns.
#![allow(dead_code)]

/// Whether `tool` is on PATH. A test that needs it calls this first and returns when it is false: in CI
/// (`CI=true`) a missing tool fails the test instead; elsewhere the test prints `SKIPPED: <test>: <why>`.
pub fn require_tool(tool: &str) -> bool {
    on_path(tool) || skip(&format!("{tool} is not installed (not on PATH)"))
}

/// Whether an executable file named `tool` is in a PATH directory.
pub fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The first of `tools` on PATH (for example several names of a Lua interpreter), with the same CI rule as
/// [`require_tool`].
pub fn require_any_tool<'a>(tools: &[&'a str]) -> Option<&'a str> {
    let found = tools.iter().copied().find(|t| on_path(t));
    if found.is_none() {
        skip(&format!("none of {tools:?} is installed (not on PATH)"));
    }
    found
}

/// Whether the data file `path` exists, with the same CI rule as [`require_tool`].
pub fn require_file(path: &std::path::Path) -> bool {
    path.is_file() || skip(&format!("{} is not present", path.display()))
}

/// In CI: panics with `why`. Elsewhere: prints `SKIPPED: <test>: <why>` and returns false. The test's name is its
/// thread's name (what the test harness sets; `#[tokio::test]` bodies run on that thread too).
pub fn skip(why: &str) -> bool {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        panic!(
            "{test}: {why}; CI=true, so this is a failure (.ci/run installs what the tests need)"
        );
    }
    // Written straight to the process's stderr, past the test harness's capture, so a plain `cargo test` shows it.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {why}");
    false
}
