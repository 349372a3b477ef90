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

/// On a terminal (a pseudo-terminal from util-linux `script`, its bytes replayed through a VT100 emulator): the
/// live view redraws one line per DropletAction in place (never two lines for one resource on the screen), then
/// gives way to the table, so the final screen is the header, the table and the summary, without log lines.
#[test]
fn terminal_demo_redraws_in_place_and_ends_with_the_table() {
    let state = tempfile::tempdir().expect("temp dir");
    let inner = format!(
        "stty rows 200 cols 250 && exec '{BIN}' demo --state-dir '{}'",
        state.path().display()
    );
    let out = match Command::new("script")
        .current_dir(ROOT)
        .args(["-qec", &inner, "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: terminal_demo_redraws_in_place_and_ends_with_the_table: `script` (util-linux) not found"
            );
            return;
        }
        Err(e) => panic!("cannot run script: {e}"),
    };
    assert!(
        out.status.success(),
        "demo failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let size = |n: u16| std::num::NonZeroU16::new(n).expect("non-zero");
    let mut term = vt100::Parser::new(size(200), size(250), 0);
    let mut seen_live_line = false;
    for chunk in out.stdout.chunks(256) {
        term.process(chunk);
        let screen = term.screen().contents();
        let mut labels = std::collections::BTreeMap::<&str, usize>::new();
        for line in screen.lines() {
            if let Some(label) = line
                .split_whitespace()
                .find(|w| w.starts_with("DropletAction/"))
            {
                *labels.entry(label).or_default() += 1;
                seen_live_line = true;
            }
        }
        if let Some((label, n)) = labels.iter().find(|(_, n)| **n > 1) {
            panic!("{label} is on the screen {n} times (appended instead of redrawn):\n{screen}");
        }
    }
    assert!(seen_live_line, "the live view was shown");
    let screen = term.screen().contents();
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines[0].starts_with("Kubernetes API emulator:"), "{screen}");
    assert!(
        !screen.contains("DropletAction/"),
        "the live view is cleared:\n{screen}"
    );
    assert!(!screen.contains(" INFO "), "no log lines:\n{screen}");
    let header = lines
        .iter()
        .position(|l| l.starts_with("NAME "))
        .expect("the table");
    assert!(header > 0);
    // The DropletAction summary, then the schedules' part: a schedule creating its first child, and their table.
    let summary = lines
        .iter()
        .position(|l| l.contains("DropletActions finished in"))
        .unwrap_or_else(|| panic!("the summary:\n{screen}"));
    assert!(summary > header, "{screen}");
    assert!(lines[summary].ends_with(" 0 duplicates."), "{screen}");
    assert!(
        lines[summary + 1].starts_with("Every example ended as its comment says"),
        "{screen}"
    );
    assert!(
        lines[summary..]
            .iter()
            .any(|l| l.starts_with("Schedule ") && l.contains("created its first DropletAction")),
        "{screen}"
    );
}
