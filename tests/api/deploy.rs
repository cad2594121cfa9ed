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
    render_at(&format!("{ROOT}/deploy/k8s/overlays/{overlay}"), overlay)
}

/// Renders an overlay of a copy of deploy/k8s, after `edit` changed the copy's files (as a
/// user following the comments would), and validates it.
fn render_edited(overlay: &str, edit: impl Fn(&std::path::Path)) -> String {
    let copy = crate::helpers::TempDir::new("k8s-copy");
    run("cp", &["-r", "deploy/k8s", copy.0.to_str().unwrap()], None);
    let k8s = copy.0.join("k8s");
    edit(&k8s);
    render_at(
        k8s.join("overlays").join(overlay).to_str().unwrap(),
        overlay,
    )
}

/// Replaces `from` with `to` in a file of the copy; `from` must be there.
fn edit_file(k8s: &std::path::Path, file: &str, from: &str, to: &str) {
    let path = k8s.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} holds {from:?}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

fn render_at(dir: &str, overlay: &str) -> String {
    let rendered = run("kubectl", &["kustomize", dir], None);
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

/// A cluster without the Prometheus Operator or metrics-server: the overlay renders without
/// the components that need them, once their lines are deleted as its comments say.
#[test]
fn production_renders_without_the_components_a_cluster_may_lack() {
    let production = render_edited("production", |k8s| {
        for component in ["prometheus-operator", "autoscaling"] {
            edit_file(
                k8s,
                "overlays/production/kustomization.yaml",
                &format!("  - ../../components/{component}\n"),
                "",
            );
        }
    });
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "HorizontalPodAutoscaler",
    ] {
        assert!(
            !production.contains(&format!("kind: {kind}\n")),
            "no {kind} without its component"
        );
    }
    for kind in ["Deployment", "NetworkPolicy", "PodDisruptionBudget"] {
        assert!(production.contains(&format!("kind: {kind}\n")), "{kind}");
    }
}

/// The optional components, switched on as their comments say: the JWKS file is mounted
/// and named only with jwks-file; the Ingresses route gRPC over h2c and gRPC-web to the
/// gRPC port, the JSON API to the HTTP port.
#[test]
fn production_renders_with_the_jwks_file_and_ingress_nginx_components() {
    let plain = render("production");
    assert!(
        !plain.contains("TESSERA__AUTH__JWKS_FILE") && !plain.contains("jwks.json"),
        "with the provider's keys, no JWKS file is expected"
    );
    let production = render_edited("production", |k8s| {
        for component in ["jwks-file", "ingress-nginx"] {
            edit_file(
                k8s,
                "overlays/production/kustomization.yaml",
                &format!("  # - ../../components/{component}\n"),
                &format!("  - ../../components/{component}\n"),
            );
        }
    });
    assert!(production.contains("value: /etc/tessera/secrets/jwks.json"));
    let ingresses: Vec<&str> = production
        .split("\n---\n")
        .filter(|doc| doc.contains("kind: Ingress\n"))
        .collect();
    assert_eq!(ingresses.len(), 2, "{production}");
    let grpc = ingresses
        .iter()
        .find(|doc| doc.contains("backend-protocol: GRPC"))
        .expect("an Ingress for native gRPC");
    assert!(grpc.contains("name: grpc") && grpc.contains("secretName: tessera-tls"));
    let web = ingresses
        .iter()
        .find(|doc| doc.contains("backend-protocol: HTTP"))
        .expect("an Ingress for the JSON API and gRPC-web");
    let grpc_web = web
        .split("- backend:")
        .find(|path| path.contains("(zitadel|tessera)"))
        .expect("gRPC-web paths");
    assert!(grpc_web.contains("name: grpc"), "{grpc_web}");
    assert!(web.contains("use-regex: \"true\""));
}

/// The NetworkPolicy's neighbours are the overlay's parameters (network.yaml), not names
/// fixed in the policy.
#[test]
fn the_network_policy_takes_its_namespaces_and_redis_port_from_the_overlay() {
    let production = render_edited("production", |k8s| {
        let file = "overlays/production/network.yaml";
        edit_file(
            k8s,
            file,
            "ingressNamespace: ingress-nginx",
            "ingressNamespace: edge",
        );
        edit_file(
            k8s,
            file,
            "monitoringNamespace: monitoring",
            "monitoringNamespace: obs",
        );
        edit_file(k8s, file, "redisNamespace: redis", "redisNamespace: data");
        edit_file(k8s, file, "redisPort: \"6379\"", "redisPort: \"6380\"");
    });
    let policy = production
        .split("\n---\n")
        .find(|doc| doc.contains("kind: NetworkPolicy\n"))
        .unwrap();
    for name in ["edge", "obs", "data"] {
        assert!(
            policy.contains(&format!("kubernetes.io/metadata.name: {name}\n")),
            "{name} in {policy}"
        );
    }
    assert!(policy.contains("port: 6380\n"), "an integer port: {policy}");
    assert!(!policy.contains("6379") && !policy.contains("NAMESPACE"));
    assert!(
        !production.contains("tessera-network"),
        "the parameters stay out of the cluster"
    );
    let default = render("production");
    assert!(
        !default.contains("_NAMESPACE"),
        "every placeholder is replaced"
    );
}

/// What a container build is sent: the crate, not the build's or the tests' leftovers.
#[test]
fn dockerignore_leaves_out_what_the_image_does_not_need() {
    let ignore = std::fs::read_to_string(format!("{ROOT}/.dockerignore")).unwrap();
    let lines: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    for left_out in ["target", ".git", "tests/oidc/node_modules", "fuzz/target"] {
        assert!(lines.contains(&left_out), "{left_out} left out");
    }
    for needed in [
        "src",
        "proto",
        "config",
        "Cargo.lock",
        "Cargo.toml",
        "build.rs",
    ] {
        assert!(
            !lines
                .iter()
                .any(|l| *l == needed || needed.starts_with(&format!("{l}/"))),
            "{needed} is sent"
        );
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
            "deploy/k8s/components/prometheus-operator/prometheusrule.yaml",
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
    // The image's command is `serve`, its entrypoint the binary alone, so that the overlays'
    // `args: ["serve"]` and `check-config --env production` both run as written.
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/tessera\"]\nCMD [\"serve\"]"));
    let podman = std::fs::read_to_string(format!("{ROOT}/scripts/image")).unwrap();
    for line in [
        "'USER 65532:65532'",
        "'ENTRYPOINT [\"/usr/local/bin/tessera\"]'",
        "'CMD [\"serve\"]'",
        "'ENV TESSERA_CONFIG_DIR=/etc/tessera/config'",
    ] {
        assert!(
            podman.contains(line),
            "scripts/image builds the same image: {line}"
        );
    }
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
