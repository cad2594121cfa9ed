//! deploy/: the Kustomize overlays render and validate against Kubernetes 1.32, the alert
//! rules pass promtool, /metrics passes `promtool check metrics`, the dashboard asks only
//! for metrics that exist, and the Dockerfile runs as non-root with no shell.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::helpers::{Backend, Token, spawn_app};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test installs it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn render(overlay: &str) -> String {
    let rendered = run(
        "kubectl",
        &["kustomize", &format!("deploy/k8s/overlays/{overlay}")],
        None,
    );
    // Removed on drop, also when a check below panics.
    let dir = crate::helpers::TempDir::new("kustomize");
    let file = dir.0.join(format!("{overlay}.yaml"));
    std::fs::write(&file, &rendered).unwrap();
    run(
        "kubernetes-validate",
        &[
            "--strict",
            "--quiet",
            "-k",
            "1.32.0",
            file.to_str().unwrap(),
        ],
        None,
    );
    rendered
}

#[test]
fn kustomize_overlays_render_and_validate() {
    let dev = render("dev");
    for kind in ["Namespace", "Deployment", "Service", "ConfigMap", "Secret"] {
        assert!(dev.contains(&format!("kind: {kind}\n")), "dev has a {kind}");
    }
    assert!(dev.contains("name: redis"), "dev brings its own Redis");
    let production = render("production");
    for kind in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
    ] {
        assert!(
            production.contains(&format!("kind: {kind}\n")),
            "production has a {kind}"
        );
    }
    for line in [
        "replicas: 3",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
        "path: /debug/healthz",
        "path: /debug/ready",
        "topologySpreadConstraints:",
        "podAntiAffinity:",
        "secretName: tessera-secrets",
        "image: registry.example.com/tessera:0.1.0",
    ] {
        assert!(production.contains(line), "production renders {line:?}");
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let extract = "import sys, yaml; doc = yaml.safe_load(open(sys.argv[1])); yaml.safe_dump(doc['spec'], sys.stdout)";
    let groups = run(
        "python3",
        &[
            "-c",
            extract,
            "deploy/k8s/overlays/production/prometheusrule.yaml",
        ],
        None,
    );
    let dir = crate::helpers::TempDir::new("rules");
    let file = dir.0.join("rules.yaml");
    std::fs::write(&file, groups).unwrap();
    let checked = run(
        "promtool",
        &["check", "rules", file.to_str().unwrap()],
        None,
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
}

#[actix_web::test]
async fn metrics_pass_promtool_and_the_dashboard_asks_only_for_them() {
    let app = spawn_app(Backend::Memory).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    app.enroll_ready(&alice).await;
    app.check(&alice, "alice", "000000").await;
    let text = app.metrics_text().await;
    let lint = tokio::task::spawn_blocking(move || {
        let out = run("promtool", &["check", "metrics"], Some(&text));
        (out, text)
    })
    .await
    .unwrap();
    let (lint, text) = lint;
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/monitoring/grafana-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("tessera_"));
            for name in names {
                assert!(
                    text.contains(&format!("\n{name}"))
                        || text.contains(&format!("# TYPE {name} ")),
                    "{name} in /metrics"
                );
            }
        }
    }
}

#[test]
fn dockerfile_runs_non_root_without_a_shell_and_scripts_test_can_build_the_same_binary() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("FROM gcr.io/distroless/cc-debian12:nonroot"),
        "no shell at run time"
    );
    assert!(dockerfile.contains("USER 65532:65532"));
    let build = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("RUN cargo build"))
        .expect("the Dockerfile builds with cargo");
    assert!(build.contains("--release") && build.contains("--locked"));
    let script = std::fs::read_to_string(format!("{ROOT}/scripts/test")).unwrap();
    assert!(
        script.contains("deploy/Dockerfile"),
        "scripts/test --release-build builds with the Dockerfile's command"
    );
}
