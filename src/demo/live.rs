//! The demo's live view: one line per object of the `droplet-operator.dev` API group (DropletActions, and any other
//! kind the group serves, such as schedules) with its phase, action ID and elapsed time.
//!
//! On a terminal the lines are redrawn in place by `indicatif`; otherwise (a pipe, a file, CI logs, `--verbose`)
//! one plain line is appended each time an object's phase, action or reason changes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// What one line shows about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `DropletAction`, `DropletActionSchedule`, …
    pub kind: String,
    /// metadata.name.
    pub name: String,
    /// status.phase (`-` before the controller wrote one).
    pub phase: String,
    /// status.actionSummary: the DigitalOcean action ID, or `completed/total` for tags (`-` before one exists).
    pub action: String,
    /// status.reason while it is not finished and says more than the phase (why it waits), empty otherwise.
    pub reason: String,
    /// Finished for good: a DropletAction in Succeeded, Failed or Expired.
    pub finished: bool,
}

impl Row {
    /// The row of an object of `kind`, from its JSON (as listed through the API).
    pub fn from_object(kind: &str, name: &str, obj: &Value) -> Row {
        let status = &obj["status"];
        let text = |field: &str| {
            status[field]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let phase = text("phase").unwrap_or_else(|| "-".into());
        let finished =
            kind == "DropletAction" && matches!(phase.as_str(), "Succeeded" | "Failed" | "Expired");
        Row {
            kind: kind.to_string(),
            name: name.to_string(),
            action: text("actionSummary").unwrap_or_else(|| "-".into()),
            reason: text("reason")
                .filter(|r| !finished && *r != phase)
                .unwrap_or_default(),
            phase,
            finished,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// How the view is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn in place (stdout is a terminal).
    InPlace,
    /// One appended line per change.
    Lines,
}

/// One line of the view: `label  phase  action  elapsed  reason`, label padded to `width`.
pub fn format_line(row: &Row, elapsed: Duration, width: usize) -> String {
    let line = format!(
        "{label:<width$}  {phase:<9}  {action:<12}  {secs:>6.1}s  {reason}",
        label = row.label(),
        phase = row.phase,
        action = row.action,
        secs = elapsed.as_secs_f64(),
        reason = row.reason,
    );
    line.trim_end().to_string()
}

struct Entry {
    bar: Option<ProgressBar>,
    first_seen: Instant,
    finished_at: Option<Instant>,
    shown: Option<(String, String, String)>,
}

impl Entry {
    fn elapsed(&self, now: Instant) -> Duration {
        self.finished_at.unwrap_or(now) - self.first_seen
    }
}

/// The live view.
pub struct LiveView {
    mode: Mode,
    multi: MultiProgress,
    width: usize,
    entries: BTreeMap<(String, String), Entry>,
    order: Vec<(String, String)>,
}

impl LiveView {
    /// A view; `width` is the label width to pad to (longer labels widen it). Each line's elapsed time counts from
    /// when the object was first listed until it finished.
    pub fn new(mode: Mode, width: usize) -> LiveView {
        let target = match mode {
            Mode::InPlace => ProgressDrawTarget::stdout(),
            Mode::Lines => ProgressDrawTarget::hidden(),
        };
        LiveView {
            mode,
            multi: MultiProgress::with_draw_target(target),
            width,
            entries: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// Shows the current state of every listed object (objects not listed keep their last line).
    pub fn update(&mut self, rows: &[Row]) {
        let now = Instant::now();
        if let Some(w) = rows.iter().map(|r| r.label().chars().count()).max() {
            self.width = self.width.max(w);
        }
        for row in rows {
            let key = (row.kind.clone(), row.name.clone());
            if !self.entries.contains_key(&key) {
                let bar = (self.mode == Mode::InPlace).then(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(running_style());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                self.order.push(key.clone());
                self.entries.insert(
                    key.clone(),
                    Entry {
                        bar,
                        first_seen: now,
                        finished_at: None,
                        shown: None,
                    },
                );
            }
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if row.finished && entry.finished_at.is_none() {
                entry.finished_at = Some(now);
            }
            let line = format_line(row, entry.elapsed(now), self.width);
            let state = (row.phase.clone(), row.action.clone(), row.reason.clone());
            match &entry.bar {
                Some(bar) => {
                    if row.finished && !bar.is_finished() {
                        bar.set_style(finished_style());
                        bar.set_prefix(if row.phase == "Succeeded" {
                            "✓"
                        } else {
                            "✗"
                        });
                        bar.finish_with_message(line);
                    } else if !bar.is_finished() {
                        bar.set_message(line);
                    }
                }
                None => {
                    // Not yet picked up by the controller: nothing to say about it yet.
                    if entry.shown.as_ref() != Some(&state) && row.phase != "-" {
                        println!("{line}");
                    }
                }
            }
            entry.shown = Some(state);
        }
    }

    /// Removes the in-place lines (the final table replaces them); appended lines stay.
    pub fn finish(self) {
        for key in &self.order {
            if let Some(bar) = self.entries.get(key).and_then(|e| e.bar.as_ref()) {
                bar.finish_and_clear();
            }
        }
        let _ = self.multi.clear();
    }
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn finished_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_read_phase_action_and_reason_from_status() {
        let obj = json!({"status": {"phase": "Running", "reason": "Running"}});
        let row = Row::from_object("DropletAction", "reboot", &obj);
        assert_eq!(
            row.reason, "",
            "a reason that repeats the phase is left out"
        );
        let obj = json!({"status": {"phase": "Pending", "reason": "DropletBusy"}});
        let row = Row::from_object("DropletAction", "reboot", &obj);
        assert_eq!(row.phase, "Pending");
        assert_eq!(row.action, "-");
        assert_eq!(row.reason, "DropletBusy");
        assert!(!row.finished);

        let obj = json!({"status": {"phase": "Succeeded", "reason": "Succeeded", "actionSummary": "1800000003"}});
        let row = Row::from_object("DropletAction", "reboot", &obj);
        assert!(row.finished);
        assert_eq!(row.reason, "", "no reason once finished");
        assert_eq!(
            format_line(&row, Duration::from_millis(1500), 22),
            "DropletAction/reboot    Succeeded  1800000003       1.5s"
        );
    }

    #[test]
    fn objects_without_status_and_other_kinds_are_shown_but_never_finished() {
        let row = Row::from_object("DropletAction", "new", &json!({}));
        assert_eq!((row.phase.as_str(), row.finished), ("-", false));
        // A kind this view knows nothing about (a schedule): shown with whatever status it has, never "finished".
        let obj = json!({"status": {"phase": "Succeeded"}});
        let row = Row::from_object("DropletActionSchedule", "nightly", &obj);
        assert_eq!(row.phase, "Succeeded");
        assert!(!row.finished);
        assert_eq!(
            format_line(&row, Duration::ZERO, 0),
            "DropletActionSchedule/nightly  Succeeded  -                0.0s"
        );
    }
}
