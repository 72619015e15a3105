//! `silo plugin new | test | build`, as a new plugin author uses them,
//! outside the Silo repository: a project is written, its cases pass, a
//! change to the plugin fails a case, and the built component, pasted into
//! a config, judges `silo run`'s uploads.

use std::path::Path;
use std::process::{Command, Output};

fn silo(dir: &Path, args: &[&str]) -> Output {
    let tool = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests with tests/run, which installs componentize-py and jco")
        })
    };
    Command::new(env!("CARGO_BIN_EXE_silo"))
        .current_dir(dir)
        .env("SILO_COMPONENTIZE_PY", tool("SILO_TEST_COMPONENTIZE_PY"))
        .env("SILO_JCO", tool("SILO_TEST_JCO"))
        // The projects' builds share one target directory across runs.
        .env(
            "CARGO_TARGET_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugin-projects"),
        )
        .env_remove("SILO_LOG")
        .args(args)
        .output()
        .expect("run silo")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_validator_from_new_to_a_config_that_uses_it() {
    for lang in ["rust", "python", "js"] {
        validator_from_new_to_a_config(lang);
    }
}

fn validator_from_new_to_a_config(lang: &str) {
    let work = tempfile::tempdir().unwrap();
    let new = silo(work.path(), &["plugin", "new", "size-guard", "--lang", lang]);
    assert!(new.status.success(), "{}", text(&new));
    let project = work.path().join("size-guard");
    let written: &[&str] = match lang {
        "rust" => &["Cargo.toml", "src/lib.rs", "sdk/src/lib.rs"],
        "python" => &["app.py", "silo_sdk.py"],
        _ => &["app.js", "silo_sdk.js"],
    };
    for file in written
        .iter()
        .chain(&["silo-plugin.toml", "tests/cases.toml", "wit/silo.wit"])
    {
        assert!(project.join(file).is_file(), "{lang}: {file} was not written");
    }

    let test = silo(work.path(), &["plugin", "test", "size-guard"]);
    let out = text(&test);
    assert!(test.status.success(), "{out}");
    assert!(out.contains("ok    an empty file is refused"), "{out}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");

    // Made to refuse something else, the case that says otherwise fails.
    let source = project.join(match lang {
        "rust" => "src/lib.rs",
        "python" => "app.py",
        _ => "app.js",
    });
    let code = std::fs::read_to_string(&source).unwrap();
    let changed = code.replace("upload.info.size == 0", "upload.info.size < 10");
    assert_ne!(code, changed);
    std::fs::write(&source, changed).unwrap();
    let test = silo(work.path(), &["plugin", "test", "size-guard"]);
    let out = text(&test);
    assert_eq!(test.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL  a small text file is accepted") && out.contains("expected accept, got reject"),
        "{out}"
    );
    assert!(out.contains("2 passed, 1 failed"), "{out}");

    // Built, its stanza pasted into a config: `silo run` judges with it.
    let build = silo(work.path(), &["plugin", "build", "size-guard"]);
    assert!(build.status.success(), "{}", text(&build));
    let out = String::from_utf8_lossy(&build.stdout).into_owned();
    let stanza = &out[out.find("[[plugins]]").expect("a stanza")..];
    let component = out
        .lines()
        .find_map(|l| l.strip_prefix("component: "))
        .expect("the component's path");
    let site = work.path().join("site");
    std::fs::create_dir_all(site.join("plugins")).unwrap();
    std::fs::copy(component.trim(), site.join("plugins/size_guard.wasm")).unwrap();
    std::fs::write(
        site.join("silo.toml"),
        format!("plugin_dir = \"plugins\"\ndata_dir = \"state\"\n[volumes.uploads]\nbackend = \"local\"\npath = \"files\"\n\n{stanza}"),
    )
    .unwrap();
    std::fs::write(site.join("short.txt"), "tiny").unwrap();
    std::fs::write(site.join("fine.txt"), "long enough to pass").unwrap();
    let refused = silo(&site, &["run", "uploads/short.txt", "--file", "short.txt"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("\"rejected_by\": \"size-guard\""),
        "{}",
        text(&refused)
    );
    let stored = silo(&site, &["run", "uploads/fine.txt", "--file", "fine.txt"]);
    assert!(stored.status.success(), "{}", text(&stored));
    assert!(site.join("files/fine.txt").is_file());
}

#[test]
fn a_deriver_writes_beside_the_upload_within_its_grants() {
    for lang in ["rust", "python", "js"] {
        deriver_within_its_grants(lang);
    }
}

fn deriver_within_its_grants(lang: &str) {
    let work = tempfile::tempdir().unwrap();
    let new = silo(
        work.path(),
        &["plugin", "new", "note-maker", "--kind", "deriver", "--lang", lang],
    );
    assert!(new.status.success(), "{}", text(&new));
    let test = silo(work.path(), &["plugin", "test", "note-maker"]);
    let out = text(&test);
    assert!(test.status.success(), "{out}");
    assert!(out.contains("1 passed, 0 failed"), "{out}");
    // Without its write grant, the same case fails: the grants of
    // silo-plugin.toml are the ones the case runs with.
    let manifest = work.path().join("note-maker/silo-plugin.toml");
    let text_before = std::fs::read_to_string(&manifest).unwrap();
    let narrowed = text_before.replace(r#"access = ["read", "write", "delete"]"#, r#"access = ["read"]"#);
    assert_ne!(text_before, narrowed);
    std::fs::write(&manifest, narrowed).unwrap();
    let test = silo(work.path(), &["plugin", "test", "note-maker"]);
    let out = text(&test);
    assert_eq!(test.status.code(), Some(1), "{out}");
    assert!(out.contains("0 passed, 1 failed"), "{out}");
}

#[test]
fn bad_names_and_missing_projects_are_named() {
    let work = tempfile::tempdir().unwrap();
    let bad = silo(work.path(), &["plugin", "new", "Bad_Name"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("plugin name 'Bad_Name'"), "{}", text(&bad));
    let missing = silo(work.path(), &["plugin", "test", "nowhere"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("no plugin project at nowhere"),
        "{}",
        text(&missing)
    );
    assert!(silo(work.path(), &["plugin", "new", "twice"]).status.success());
    let again = silo(work.path(), &["plugin", "new", "twice"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("exists"), "{}", text(&again));
}

/// docs/PLUGINS.md's commands (its `sh` blocks), run as the guide gives
/// them, for each language its `--lang` names: each succeeds.
#[test]
fn the_guides_commands_work() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PLUGINS.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in guide.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            command if in_sh && !command.is_empty() => commands.push(command.to_owned()),
            _ => {}
        }
    }
    let verbs: Vec<&str> = commands.iter().filter_map(|c| c.split_whitespace().nth(2)).collect();
    assert_eq!(verbs, ["new", "test", "build"], "the guide's steps: {commands:?}");
    for lang in ["rust", "python", "js"] {
        let work = tempfile::tempdir().unwrap();
        for command in &commands {
            let command = command.replace("--lang rust", &format!("--lang {lang}"));
            let words: Vec<&str> = command.split_whitespace().collect();
            assert_eq!(words[0], "silo", "{command}");
            let out = silo(work.path(), &words[1..]);
            assert!(out.status.success(), "{lang}: `{command}` failed: {}", text(&out));
        }
    }
}
