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
