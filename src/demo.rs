//! `droplet-operator demo`: the sandbox, every manifest in `examples/`, a live view while they run, then the table,
//! a summary (requests, POSTs, duplicates from the simulator's request log) and a check that each DropletAction ended
//! the way its `# expect:` comment says.

mod live;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use do_sim::RequestRecord;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::discovery::Scope;
use kube::{Api, Resource, ResourceExt};
use serde_json::Value;

use crate::crd::{DropletAction, Phase};
use crate::sandbox::{Sandbox, SandboxOptions};
pub use live::{LiveView, Mode, Row, format_line};

/// One example manifest.
#[derive(Clone, Debug)]
pub struct Example {
    /// File name.
    pub file: String,
    /// The parsed resource.
    pub resource: DropletAction,
    /// The phase its `# expect:` comment promises.
    pub expect: Phase,
}

fn parse_phase(s: &str) -> Option<Phase> {
    match s.trim() {
        "Succeeded" => Some(Phase::Succeeded),
        "Failed" => Some(Phase::Failed),
        "Expired" => Some(Phase::Expired),
        _ => None,
    }
}

/// `(file name, text)` of every `dir/*.yaml` / `*.yml`, in name order (the order `kubectl apply -f dir/` uses).
pub(crate) fn manifest_files(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let file = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(p).map_err(|e| format!("{file}: {e}"))?;
            Ok((file, text))
        })
        .collect()
}

/// Reads the DropletActions among `dir/*.yaml`, in name order; other kinds: [`load_other_manifests`].
pub fn load_examples(dir: &Path) -> Result<Vec<Example>, String> {
    let mut out = Vec::new();
    for (file, text) in manifest_files(dir)? {
        let kind: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        if kind["kind"].as_str() != Some("DropletAction") {
            continue;
        }
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect:"))
            .and_then(parse_phase)
            .ok_or_else(|| format!("{file}: no '# expect: Succeeded|Failed|Expired' comment"))?;
        let resource: DropletAction =
            serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        out.push(Example {
            file,
            resource,
            expect,
        });
    }
    Ok(out)
}

/// Renders resources like `kubectl get dropletactions -o wide`, plus the expectation.
pub fn table(items: &[DropletAction], examples: &[Example]) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "TYPE".into(),
        "TARGET".into(),
        "PHASE".into(),
        "ACTION".into(),
        "EXPECTED".into(),
        "MESSAGE".into(),
    ]];
    for da in items {
        let st = da.status.clone().unwrap_or_default();
        let expected = examples
            .iter()
            .find(|e| e.resource.name_any() == da.name_any())
            .map(|e| e.expect.as_str().to_string())
            .unwrap_or_default();
        rows.push(vec![
            da.name_any(),
            da.spec.type_.as_str().into(),
            st.target.clone().unwrap_or_else(|| da.target()),
            da.phase().as_str().into(),
            st.action_summary.clone().unwrap_or_else(|| "-".into()),
            expected,
            st.message.clone().unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len() - 1)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i < widths.len() {
                    line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
                } else {
                    line.push_str(cell);
                }
            }
            line.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Manifests in `dir` that are not DropletActions (for example schedules), as (file, object), in name order. They are
/// applied as they are, through API discovery, and shown in the live view; they carry no expectation.
pub fn load_other_manifests(dir: &Path) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    for (file, text) in manifest_files(dir)? {
        let obj: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        if obj["kind"].as_str() != Some("DropletAction") {
            out.push((file, obj));
        }
    }
    Ok(out)
}

/// What the demo shows besides the table.
#[derive(Clone, Debug, Default)]
pub struct DemoOutput {
    /// Controller logs go to the screen (stderr): the live view then appends lines instead of redrawing.
    pub verbose: bool,
    /// Where the controller logs go instead (printed at the start).
    pub log_file: Option<std::path::PathBuf>,
}

/// The figures printed under the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// DropletActions in a final phase.
    pub finished: usize,
    /// DropletActions applied.
    pub total: usize,
    /// Requests the simulated DigitalOcean API received.
    pub requests: usize,
    /// Of those, POSTs (initiations).
    pub posts: usize,
    /// DigitalOcean actions started more than once or not recorded by any DropletAction.
    pub duplicates: usize,
    /// From the first manifest applied to the last one finished.
    pub wall: Duration,
}

impl Summary {
    /// Counts from the simulator's request log and the DropletActions' statuses.
    pub fn compute(items: &[DropletAction], requests: &[RequestRecord], wall: Duration) -> Summary {
        Summary {
            finished: items.iter().filter(|d| d.phase().is_terminal()).count(),
            total: items.len(),
            requests: requests.len(),
            posts: requests.iter().filter(|r| r.method == "POST").count(),
            duplicates: duplicates(items, requests),
            wall,
        }
    }

    /// `20/20 DropletActions finished in 6.6s: 36 DigitalOcean API requests, 19 POSTs, 0 duplicates.`
    pub fn line(&self) -> String {
        format!(
            "{}/{} DropletActions finished in {:.1}s: {} DigitalOcean API requests, {} POSTs, {} duplicates.",
            self.finished,
            self.total,
            self.wall.as_secs_f64(),
            self.requests,
            self.posts,
            self.duplicates
        )
    }
}

/// Actions that ran more often than the resources asked for: every DigitalOcean action an applied POST created (the
/// simulator's request log, including POSTs whose response was lost) that no DropletAction records, plus action IDs
/// recorded by more than one DropletAction or twice by one. 0 means exactly once.
pub fn duplicates(items: &[DropletAction], requests: &[RequestRecord]) -> usize {
    let mut recorded = BTreeMap::<i64, usize>::new();
    for a in items
        .iter()
        .flat_map(|d| d.status.iter().flat_map(|s| s.actions.iter()))
    {
        *recorded.entry(a.id).or_default() += 1;
    }
    let created: BTreeSet<i64> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.applied)
        .flat_map(|r| r.action_ids.iter().copied())
        .collect();
    let unrecorded = created
        .iter()
        .filter(|id| !recorded.contains_key(id))
        .count();
    let twice: usize = recorded.values().map(|n| n - 1).sum();
    unrecorded + twice
}

/// Lists every kind the `droplet-operator.dev` API group serves (found by discovery), as live-view rows.
struct Lister {
    apis: Vec<(String, Api<DynamicObject>)>,
}

impl Lister {
    async fn discover(client: &kube::Client, namespace: &str) -> Result<Lister, String> {
        let group = kube::discovery::group(client, DropletAction::group(&()).as_ref())
            .await
            .map_err(|e| format!("discovering the droplet-operator.dev API group: {e}"))?;
        let mut apis: Vec<(String, Api<DynamicObject>)> = group
            .recommended_resources()
            .into_iter()
            .map(|(ar, caps)| {
                let api = match caps.scope {
                    Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &ar),
                    Scope::Cluster => Api::all_with(client.clone(), &ar),
                };
                (ar.kind, api)
            })
            .collect();
        // DropletActions first, then the other kinds by name.
        apis.sort_by_key(|(kind, _)| (kind != "DropletAction", kind.clone()));
        Ok(Lister { apis })
    }

    fn find(&self, kind: &str) -> Option<&Api<DynamicObject>> {
        self.apis.iter().find(|(k, _)| k == kind).map(|(_, a)| a)
    }

    async fn rows(&self) -> Result<Vec<Row>, String> {
        let mut rows = Vec::new();
        for (kind, api) in &self.apis {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing {kind}s: {e}"))?;
            for obj in list.items {
                let value = serde_json::to_value(&obj).unwrap_or_default();
                rows.push(Row::from_object(kind, &obj.name_any(), &value));
            }
        }
        Ok(rows)
    }
}

fn live_mode(verbose: bool) -> Mode {
    if !verbose && std::io::stdout().is_terminal() {
        Mode::InPlace
    } else {
        Mode::Lines
    }
}

/// Runs the demo; Ok(true) when every example ended as documented.
pub async fn run(
    examples_dir: &Path,
    opts: SandboxOptions,
    timeout: Duration,
    output: DemoOutput,
) -> Result<bool, String> {
    let examples = load_examples(examples_dir)?;
    let others = load_other_manifests(examples_dir)?;
    let sandbox = Sandbox::start(opts).await.map_err(|e| e.to_string())?;
    println!("Kubernetes API emulator:      {}", sandbox.kube.url());
    println!("DigitalOcean API (simulated): {}", sandbox.do_api_url);
    if let Some(log) = &output.log_file {
        println!(
            "Controller log:               {} (--verbose shows it here)",
            log.display()
        );
    }
    println!(
        "Applying {} manifests from {}",
        examples.len() + others.len(),
        examples_dir.display()
    );
    println!();
    let client = sandbox.kube.client();
    let lister = Lister::discover(&client, "default").await?;
    let api: Api<DropletAction> = Api::namespaced(client.clone(), "default");
    let pp = PostParams {
        field_manager: Some("droplet-operator-demo".into()),
        ..Default::default()
    };
    let started = Instant::now();
    for ex in &examples {
        let mut obj = ex.resource.clone();
        obj.metadata.namespace = Some("default".into());
        api.create(&pp, &obj)
            .await
            .map_err(|e| format!("creating {}: {e}", ex.file))?;
    }
    for (file, obj) in &others {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let other = lister.find(kind).ok_or_else(|| {
            format!("{file}: kind {kind:?} is not served by the droplet-operator.dev API group")
        })?;
        let obj: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| format!("{file}: {e}"))?;
        other
            .create(&pp, &obj)
            .await
            .map_err(|e| format!("creating {file}: {e}"))?;
    }

    let width = examples
        .iter()
        .map(|e| "DropletAction/".len() + e.resource.name_any().chars().count())
        .max()
        .unwrap_or(0);
    let mut view = LiveView::new(live_mode(output.verbose), width);
    let items = loop {
        view.update(&lister.rows().await?);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing DropletActions: {e}"))?;
        let done = list.items.iter().all(|d| d.phase().is_terminal());
        if done || started.elapsed() > timeout {
            if let Ok(rows) = lister.rows().await {
                view.update(&rows);
            }
            break list.items;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let wall = started.elapsed();
    view.finish();
    println!();
    println!("{}", table(&items, &examples));
    println!();
    let mut ok = true;
    for ex in &examples {
        let got = items
            .iter()
            .find(|d| d.name_any() == ex.resource.name_any())
            .map(DropletAction::phase);
        if got != Some(ex.expect) {
            ok = false;
            println!(
                "MISMATCH {}: expected {}, got {}",
                ex.file,
                ex.expect.as_str(),
                got.map(Phase::as_str).unwrap_or("missing")
            );
        }
    }
    if let Some(sim) = &sandbox.sim {
        let summary = Summary::compute(&items, &sim.requests(), wall);
        if summary.duplicates > 0 {
            ok = false;
        }
        println!("{}", summary.line());
    } else {
        println!(
            "{} DropletActions finished in {:.1}s (requests are counted only against the simulator).",
            items.iter().filter(|d| d.phase().is_terminal()).count(),
            wall.as_secs_f64()
        );
    }
    println!(
        "{}",
        if ok {
            "Every example ended as its comment says, and no action ran twice."
        } else {
            "Some examples did not end as documented (see the controller log)."
        }
    );
    let schedules_ok = crate::schedule::demo::run(
        &sandbox.kube.client(),
        &examples_dir.join("schedules"),
        timeout,
    )
    .await?;
    sandbox.stop().await;
    Ok(ok && schedules_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn post(action_ids: &[i64], applied: bool) -> RequestRecord {
        RequestRecord {
            seq: 0,
            time: jiff::Timestamp::UNIX_EPOCH,
            method: "POST".into(),
            path: "/v2/droplets/101001/actions".into(),
            query: None,
            status: if applied { 201 } else { 500 },
            droplet_id: Some(101001),
            action_type: Some("reboot".into()),
            applied,
            action_ids: action_ids.to_vec(),
            fault: None,
            request_id: String::new(),
            at: None,
        }
    }

    fn get() -> RequestRecord {
        RequestRecord {
            method: "GET".into(),
            applied: false,
            action_ids: vec![],
            ..post(&[], false)
        }
    }

    fn da(name: &str, phase: &str, ids: &[i64]) -> DropletAction {
        let actions: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "dropletId": 101001, "type": "reboot", "status": "completed"}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
            "metadata": {"name": name},
            "spec": {"dropletId": 101001, "type": "reboot"},
            "status": {"phase": phase, "actions": actions},
        }))
        .expect("DropletAction")
    }

    #[test]
    fn summary_counts_requests_posts_and_finished() {
        let items = [da("a", "Succeeded", &[1]), da("b", "Running", &[2])];
        let requests = [post(&[1], true), post(&[2], true), get(), post(&[], false)];
        let s = Summary::compute(&items, &requests, Duration::from_millis(6600));
        assert_eq!(
            s,
            Summary {
                finished: 1,
                total: 2,
                requests: 4,
                posts: 3,
                duplicates: 0,
                wall: Duration::from_millis(6600),
            }
        );
        assert_eq!(
            s.line(),
            "1/2 DropletActions finished in 6.6s: 4 DigitalOcean API requests, 3 POSTs, 0 duplicates."
        );
    }

    #[test]
    fn an_applied_post_that_no_dropletaction_records_is_a_duplicate() {
        // A re-sent POST after a lost response: DigitalOcean started action 2 too, only 1 is recorded.
        let items = [da("a", "Succeeded", &[1])];
        assert_eq!(duplicates(&items, &[post(&[1], true), post(&[2], true)]), 1);
        // A POST that was refused (500, nothing applied) is no duplicate.
        assert_eq!(duplicates(&items, &[post(&[1], true), post(&[], false)]), 0);
        // An adopted action (its POST's response was lost, then found by listing) is recorded once: fine.
        let mut dropped = post(&[1], true);
        dropped.fault = Some("dropped_after_apply".into());
        assert_eq!(duplicates(&items, &[dropped]), 0);
    }

    #[test]
    fn an_action_recorded_twice_is_a_duplicate() {
        let items = [da("a", "Succeeded", &[1]), da("b", "Succeeded", &[1])];
        assert_eq!(duplicates(&items, &[post(&[1], true)]), 1);
    }

    #[test]
    fn other_kinds_are_loaded_apart_from_the_dropletactions() {
        let dir = std::env::temp_dir().join(format!("demo-examples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("a.yaml"),
            "# expect: Succeeded\napiVersion: droplet-operator.dev/v1alpha1\nkind: DropletAction\nmetadata:\n  name: a\nspec:\n  dropletId: 101001\n  type: reboot\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("b.yaml"),
            "apiVersion: droplet-operator.dev/v1alpha1\nkind: DropletActionSchedule\nmetadata:\n  name: nightly\nspec: {}\n",
        )
        .expect("write");
        let examples = load_examples(&dir).expect("examples");
        let others = load_other_manifests(&dir).expect("others");
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(examples.len(), 1);
        assert_eq!(examples[0].expect, Phase::Succeeded);
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].0, "b.yaml");
        assert_eq!(others[0].1["kind"], json!("DropletActionSchedule"));
    }
}
