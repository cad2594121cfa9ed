//! The README as a user reads it: every setting of `config/default.toml` has a row in its
//! configuration table, with the default the file gives.

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn readme() -> String {
    std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap()
}

/// `section.key` → the value as the table would show it (`""` and `[]` are "empty").
fn default_settings() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{ROOT}/config/default.toml")).unwrap();
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key = value");
        let value = value.trim().trim_matches('"');
        let shown = if value.is_empty() || value == "[]" {
            "empty".to_owned()
        } else {
            value.to_owned()
        };
        settings.push((format!("{section}.{}", key.trim()), shown));
    }
    settings
}

/// The configuration table's rows: the variables each names (a row may name several:
/// `TESSERA__HTTP__A`, `_B`, or `TESSERA__X__SECRET(_FILE)`) and its default cell.
fn configuration_rows(readme: &str) -> Vec<(Vec<String>, String)> {
    let table = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut rows = Vec::new();
    for line in table.lines().filter(|l| l.starts_with("| `TESSERA__")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let (names_cell, default_cell) = (cells[0], cells[1]);
        let mut prefix = String::new();
        let mut names = Vec::new();
        for token in names_cell.split('`').skip(1).step_by(2) {
            let name = if let Some(rest) = token.strip_prefix("TESSERA__") {
                // TESSERA__SECTION__: what a name that starts with `_` continues.
                let section = rest.split("__").next().unwrap();
                prefix = format!("TESSERA__{section}__");
                token.to_owned()
            } else if let Some(rest) = token.strip_prefix('_') {
                format!("{prefix}{rest}")
            } else {
                continue;
            };
            match name.strip_suffix("(_FILE)") {
                Some(base) => {
                    names.push(base.to_owned());
                    names.push(format!("{base}_FILE"));
                }
                None => names.push(name),
            }
        }
        rows.push((names, default_cell.to_owned()));
    }
    rows
}

/// The backticked values of a default cell, before any parenthesis ("`5`, `300`"), or
/// "empty" when the cell says so.
fn shown_defaults(cell: &str) -> Vec<String> {
    let before_note = cell.split(" (").next().unwrap();
    if before_note.trim_start().starts_with("empty") {
        return vec!["empty".to_owned()];
    }
    before_note
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_default_setting_has_a_row_with_its_default() {
    let readme = readme();
    let rows = configuration_rows(&readme);
    assert!(rows.len() > 40, "the table was found: {} rows", rows.len());
    let mut missing = Vec::new();
    for (setting, value) in default_settings() {
        let variable = format!("TESSERA__{}", setting.replace('.', "__").to_uppercase());
        let Some((names, cell)) = rows.iter().find(|(names, _)| names.contains(&variable)) else {
            missing.push(variable);
            continue;
        };
        let shown = shown_defaults(cell);
        // A row with one default for each name, or one default for all of them: that value
        // is the file's. (Rows that explain their default in words are not compared.)
        let expected = if shown.len() == names.len() {
            names.iter().position(|n| *n == variable).map(|i| &shown[i])
        } else if shown.len() == 1 {
            shown.first()
        } else {
            None
        };
        if let Some(expected) = expected {
            assert_eq!(
                *expected, value,
                "{variable}: the README's default {cell:?}, the file's {value:?}"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "settings of config/default.toml without a row in the README's table: {missing:?}"
    );
}

/// What `tessera dev` prints agrees with the README's walk-through: the same folder, the same
/// enrollment and QR lines, a token with both roles the walk-through needs.
#[actix_web::test]
async fn the_dev_banner_agrees_with_the_walk_through() {
    let dev = crate::helpers::DevBinary::start(&[]).await;
    let port = dev.base.rsplit(':').next().unwrap().to_owned();
    let banner = dev.stop();
    let readme = readme();
    let walk_through = readme
        .split("\n## A walk through with curl\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let lines: Vec<String> = banner
        .lines()
        .map(str::trim)
        .filter(|line| {
            line.starts_with("cd ")
                || line.starts_with("tessera qr")
                || line.starts_with("curl -s -X POST")
        })
        .map(|line| line.replace(&format!("localhost:{port}"), "localhost:8080"))
        .collect();
    assert_eq!(lines.len(), 3, "{banner}");
    for line in &lines {
        assert!(
            walk_through.contains(line.as_str()),
            "the banner's {line:?} is not in the README's walk-through"
        );
    }
    assert!(banner.contains("(roles otp.check, otp.admin for acme"));
    assert!(
        walk_through
            .contains("tessera token --org acme --user alice --role otp.check --role otp.admin"),
        "the walk-through's fallback token can do every step"
    );
}

/// The README's first deployment, run as it stands: its block, on free ports (6380, 8080
/// and 8081 replaced) and in a temporary home, with the tessera under test on the PATH. It
/// ends with the enrollment verified and READY in a Redis that has AOF on and lets tessera's
/// ACL user alone in.
#[test]
fn the_first_deployment_section_runs_as_written() {
    let readme = readme();
    let block = readme
        .split("<!-- tests/api/readme.rs runs the next block -->\n```sh\n")
        .nth(1)
        .expect("the marked block")
        .split("\n```\n")
        .next()
        .unwrap();
    // The ACL rule is the one "Redis in production" gives (and another test enforces).
    let rule = |line: &str| {
        line.split("resetkeys")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let documented = readme
        .lines()
        .find(|l| l.starts_with("ACL SETUSER tessera "))
        .unwrap();
    let deployed = block
        .lines()
        .find(|l| l.starts_with("user tessera on "))
        .unwrap();
    assert_eq!(rule(deployed), rule(documented));

    let home = crate::helpers::TempDir::new("first-deployment");
    let bin = home.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tessera"), bin.join("tessera")).unwrap();
    let (redis, http, grpc) = (
        crate::helpers::free_port(),
        crate::helpers::free_port(),
        crate::helpers::free_port(),
    );
    let script = block
        .replace("6380", &redis.to_string())
        .replace("8080", &http.to_string())
        .replace("8081", &grpc.to_string());
    // Whatever happens, tessera and Redis stop with the script.
    let script = format!(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null; [ -f ~/tessera-prod/redis.pid ] && kill $(cat ~/tessera-prod/redis.pid)' EXIT\n\
         {script}\n"
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("HOME", &home.0)
        .env("PATH", path)
        .env_remove("TESSERA_ENV")
        .env_remove("TESSERA_CONFIG_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(home.0.join("tessera-prod/tessera.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "the block failed:\n{stdout}\n{}\n--- tessera.log:\n{log}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("configuration ok"), "{stdout}");
    assert!(
        stdout.contains(r#""resourceOwner":"acme""#),
        "verified: {stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("2"), "READY in Redis: {stdout}");
    let aof = home.0.join("tessera-prod/appendonlydir");
    assert!(aof.is_dir(), "Redis keeps an append-only file");
    assert!(
        log.contains("tessera listening"),
        "JSON logs in tessera.log: {log}"
    );
}
