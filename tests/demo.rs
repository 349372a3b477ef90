//! `droplet-operator demo` as a newcomer sees it with its output piped (CI logs, `| tee`): plain lines without escape
//! codes, the live view's change lines, the table, the summary with 0 duplicates, and the controller's log in a file
//! under the state dir rather than on the screen; `--verbose` brings the log back to stderr.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_droplet-operator");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn demo(state: &std::path::Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .current_dir(ROOT)
        .args(["demo", "--state-dir"])
        .arg(state)
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the demo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn piped_demo_prints_changes_table_and_summary_and_logs_to_a_file() {
    let state = tempfile::tempdir().expect("temp dir");
    let (ok, stdout, stderr) = demo(state.path(), &[]);
    assert!(ok, "demo failed:\n{stdout}\n{stderr}");
    assert!(
        !stdout.contains('\u{1b}'),
        "no escape codes when piped:\n{stdout}"
    );
    assert!(
        stderr.trim().is_empty(),
        "nothing on stderr without --verbose:\n{stderr}"
    );

    let log = state
        .path()
        .canonicalize()
        .expect("state dir")
        .join("demo.log");
    assert!(
        stdout.contains(&format!("Controller log:               {}", log.display())),
        "the log path is printed:\n{stdout}"
    );
    let log_text = std::fs::read_to_string(&log).expect("the controller log exists");
    assert!(log_text.contains("caches synced"), "{log_text}");
    assert!(
        !log_text.contains('\u{1b}'),
        "no escape codes in the log file"
    );
    assert!(
        !stdout.contains(" INFO "),
        "no log lines on stdout:\n{stdout}"
    );

    // Live view (appended lines): each DropletAction's way to its final phase.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("DropletAction/reboot") && l.contains("Succeeded")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("DropletAction/tag-snapshot") && l.contains("Running")),
        "{stdout}"
    );
    // The table, then the summary.
    let table = stdout.find("NAME   ").expect("the table header");
    let summary = stdout
        .lines()
        .find(|l| l.contains("DropletActions finished in"))
        .expect("the summary line");
    assert!(stdout.find(summary).expect("summary") > table);
    let examples = std::fs::read_dir(std::path::Path::new(ROOT).join("examples"))
        .expect("examples/")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        })
        .count();
    assert!(
        summary.starts_with(&format!(
            "{examples}/{examples} DropletActions finished in "
        )),
        "{summary}"
    );
    assert!(summary.ends_with(" 0 duplicates."), "{summary}");
    assert!(
        stdout.contains("Every example ended as its comment says"),
        "{stdout}"
    );
}

#[test]
fn verbose_demo_logs_to_stderr() {
    let state = tempfile::tempdir().expect("temp dir");
    let (ok, stdout, stderr) = demo(state.path(), &["--verbose"]);
    assert!(ok, "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("caches synced"),
        "the log is on stderr:\n{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no colours on a pipe");
    assert!(!stdout.contains("Controller log:"), "{stdout}");
    assert!(!state.path().join("demo.log").exists());
}
