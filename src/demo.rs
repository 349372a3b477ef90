//! `droplet-operator demo`: the sandbox, every manifest in `examples/`, and a check that each one ended the way
//! its `# expect:` comment says.

use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};

use crate::crd::{DropletAction, Phase};
use crate::sandbox::{Sandbox, SandboxOptions};

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

/// Reads `dir/*.yaml` in name order (the order `kubectl apply -f dir/` uses).
pub fn load_examples(dir: &Path) -> Result<Vec<Example>, String> {
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
            let expect = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect:"))
                .and_then(parse_phase)
                .ok_or_else(|| {
                    format!("{file}: no '# expect: Succeeded|Failed|Expired' comment")
                })?;
            let resource: DropletAction =
                serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
            Ok(Example {
                file,
                resource,
                expect,
            })
        })
        .collect()
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

/// Runs the demo; Ok(true) when every example ended as documented.
pub async fn run(
    examples_dir: &Path,
    opts: SandboxOptions,
    timeout: Duration,
) -> Result<bool, String> {
    let examples = load_examples(examples_dir)?;
    let sandbox = Sandbox::start(opts).await?;
    println!("Kubernetes API emulator:      {}", sandbox.kube.url());
    println!("DigitalOcean API (simulated): {}", sandbox.do_api_url);
    println!(
        "Applying {} manifests from {}",
        examples.len(),
        examples_dir.display()
    );
    let api: Api<DropletAction> = Api::namespaced(sandbox.kube.client(), "default");
    let pp = PostParams {
        field_manager: Some("droplet-operator-demo".into()),
        ..Default::default()
    };
    for ex in &examples {
        let mut obj = ex.resource.clone();
        obj.metadata.namespace = Some("default".into());
        api.create(&pp, &obj)
            .await
            .map_err(|e| format!("creating {}: {e}", ex.file))?;
    }
    let started = Instant::now();
    let items = loop {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing DropletActions: {e}"))?;
        let done = list.items.iter().all(|d| d.phase().is_terminal());
        if done || started.elapsed() > timeout {
            break list.items;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
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
        let posts = sim.requests().iter().filter(|r| r.method == "POST").count();
        println!(
            "{} DropletActions finished in {:.1}s with {} DigitalOcean API requests ({} POSTs).",
            items.len(),
            started.elapsed().as_secs_f64(),
            sim.request_count(),
            posts
        );
    }
    println!(
        "{}",
        if ok {
            "Every example ended as its comment says."
        } else {
            "Some examples did not end as documented."
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
