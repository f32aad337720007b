//! The newcomer's walkthrough, command by command, as `make devnet` prints
//! it and the README tells it: real `annal` CLI processes against a real
//! 4-validator cluster. Submit, amend, get, page through a key's history,
//! prove, verify offline with only the genesis file, save a checkpoint and
//! check that the log still extends it, audit the chain, and ask for status;
//! and an agency's bulk import of a file of records.

use std::path::Path;
use std::process::{Command, Output};

use annal_tests::{annal_bin, Cluster};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

fn annal(args: &[&str]) -> Output {
    Command::new(annal_bin()).args(args).output().expect("annal runs")
}

/// Runs `annal args`, asserts it exited 0 and returns its standard output.
fn ok(args: &[&str]) -> String {
    let out = annal(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "annal {args:?} failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn json(args: &[&str]) -> Value {
    let stdout = ok(args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("annal {args:?} printed no JSON ({e}):\n{stdout}"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn the_readme_walkthrough_works_from_the_cli() {
    let mut cluster = Cluster::start("walkthrough", 4, 2);
    cluster.wait_heights(&[0, 1, 2, 3], 1, std::time::Duration::from_secs(60));
    let dir = cluster.dir.clone();
    let url = cluster.nodes[0].api_url.clone();
    let signer = dir.join("agency-0/submitter.key");
    let genesis = dir.join("genesis.json");
    let deed = dir.join("deed.txt");
    let key = ["--namespace", "land-titles", "--key", "parcel-12-345"];

    // A record and two new versions of it, each waited for until final.
    let mut ids = Vec::new();
    for (i, line) in ["owner Jane Doe", "owner Jane Doe, area corrected", "owner John Roe"].iter().enumerate() {
        std::fs::write(&deed, format!("Parcel 12-345: {line}\n")).unwrap();
        let previous: Option<String> = ids.last().cloned();
        let mut args = vec!["submit", "--node", &url, "--signer", path(&signer), "--body-file", path(&deed)];
        args.extend(key);
        if let Some(head) = &previous {
            args.extend(["--amend", head]);
        }
        args.extend(["--wait", "--json"]);
        let sent = json(&args);
        assert_eq!(sent["version"], i as u64 + 1, "{sent}");
        assert!(sent["height"].as_u64().is_some(), "--wait prints where the record is final: {sent}");
        ids.push(sent["id"].as_str().expect("an id").to_string());
    }

    let got = json(&["get", "--node", &url, &ids[0], "--json"]);
    assert_eq!(got["status"], "final", "{got}");

    // History, two versions a page: the newest two, then the one before them.
    let mut args = vec!["history", "--node", &url];
    args.extend(key);
    let first_page = ok(&[args.as_slice(), &["--limit", "2"]].concat());
    assert!(first_page.contains(&format!("head {} version 3", ids[2])), "{first_page}");
    assert!(
        first_page.contains(&ids[2]) && first_page.contains(&ids[1]) && !first_page.contains(&ids[0]),
        "{first_page}"
    );
    assert!(first_page.contains(&format!("--before {}", ids[1])), "names the next page: {first_page}");
    let second_page = json(&[args.as_slice(), &["--limit", "2", "--before", &ids[1], "--json"]].concat());
    let versions = second_page["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "{second_page}");
    assert_eq!(versions[0]["id"], ids[0].as_str());
    assert!(second_page["earlier"].is_null(), "nothing older: {second_page}");
    let bad = annal(&[args.as_slice(), &["--limit", "1001"]].concat());
    assert!(!bad.status.success(), "a limit over 1000 is refused");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("limit"), "{}", String::from_utf8_lossy(&bad.stderr));

    // The proof, checked offline with only the genesis file (and the current head's status).
    let bundle = dir.join("bundle.json");
    ok(&["prove", "--node", &url, &ids[0], "--out", path(&bundle), "--status"]);
    let verified = ok(&["verify", path(&bundle), "--genesis", path(&genesis), "--current"]);
    assert!(verified.to_lowercase().contains("valid"), "{verified}");
    let current = annal(&["verify", path(&bundle), "--genesis", path(&genesis), "--current", "--json"]);
    let current: Value = serde_json::from_slice(&current.stdout).expect("verify --json prints JSON");
    assert_eq!(current["status"]["head"], ids[2].as_str(), "the bundle says who superseded it: {current}");

    // A checkpoint saved now is extended by the log after one more record.
    let checkpoint = dir.join("checkpoint.txt");
    ok(&["checkpoint", "--node", &url, "--out", path(&checkpoint)]);
    std::fs::write(&deed, "Parcel 12-346: owner Ann Poe\n").unwrap();
    ok(&[
        "submit",
        "--node",
        &url,
        "--signer",
        path(&signer),
        "--namespace",
        "land-titles",
        "--key",
        "parcel-12-346",
        "--body-file",
        path(&deed),
        "--wait",
    ]);
    let consistent =
        json(&["consistency", "--node", &url, "--genesis", path(&genesis), "--from", path(&checkpoint), "--json"]);
    assert_eq!(consistent["consistent"], true, "{consistent}");
    // The first record, tied to the checkpoint held: its log contains the record's block's.
    let (tied, proof) = (dir.join("tied.json"), dir.join("tied-consistency.json"));
    ok(&[
        "prove",
        "--node",
        &url,
        &ids[0],
        "--out",
        path(&tied),
        "--held",
        path(&checkpoint),
        "--consistency",
        path(&proof),
    ]);
    let held = ok(&[
        "verify",
        path(&tied),
        "--genesis",
        path(&genesis),
        "--held",
        path(&checkpoint),
        "--consistency",
        path(&proof),
    ]);
    assert!(held.contains("contains this block's log") || held.contains("is this block's"), "{held}");

    let audited = annal(&["audit", "--node", &url, "--genesis", path(&genesis)]);
    assert!(audited.status.success(), "audit: {}", String::from_utf8_lossy(&audited.stderr));
    let status = json(&["status", "--node", &url, "--json"]);
    assert!(status["log_size"].as_u64().is_some_and(|n| n >= 4), "{status}");
}

#[test]
fn an_import_publishes_a_file_names_refused_lines_and_resumes_without_duplicates() {
    // Goal: `annal import` checks every line before sending anything (a bad line stops it,
    // naming the line, with nothing sent), publishes the rest in binary batches, names each
    // refused record by its line, and run again with the --first-nonce it printed answers
    // the same records as already final without appending any twice.
    let mut cluster = Cluster::start("import", 4, 2);
    cluster.wait_heights(&[0, 1, 2, 3], 1, std::time::Duration::from_secs(60));
    let (dir, url) = (cluster.dir.clone(), cluster.nodes[0].api_url.clone());
    let signer = dir.join("agency-0/submitter.key");
    let (own, foreign) =
        (cluster.genesis.agencies[0].namespaces[0].clone(), cluster.genesis.agencies[1].namespaces[0].clone());
    let line = |ns: &str, n: usize| {
        serde_json::json!({ "namespace": ns, "key": format!("import/{n}"), "body": B64.encode(format!("title {n}")) })
            .to_string()
    };
    let mut lines: Vec<String> = (0..550).map(|n| line(&own, n)).collect();
    lines.push(String::new());
    lines.push(line(&foreign, 550)); // line 552: the signer's agency holds no grant there
    lines.extend((551..1099).map(|n| line(&own, n)));
    lines.push(
        serde_json::json!({
            "namespace": own, "key": "import/doc", "metadata": { "basis": "Act 12 s.3" },
            "document": { "sha256": "ab".repeat(32), "size": 1234, "media_type": "application/pdf" }
        })
        .to_string(),
    );
    let file = dir.join("titles.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let log_size = |c: &Cluster| c.status(0).and_then(|s| s["log_size"].as_u64()).unwrap_or(u64::MAX);

    let bad_file = dir.join("bad.jsonl");
    for (at, bad_line, want) in [
        (2, r#"{"namespace": "x", "key": "y", "body": "%%"}"#, "bad.jsonl line 3: body is not base64"),
        (
            900,
            r#"{"namespace": "x", "key": "y", "body": "", "metadata": {"a": "1", "a": "2"}}"#,
            "name \"a\" is given twice",
        ),
        (5, r#"{"namespace": "x", "key": "y", "body": "", "op": "amend"}"#, "bad.jsonl line 6: unknown field `op`"),
    ] {
        let mut bad = lines.clone();
        bad[at] = bad_line.into();
        std::fs::write(&bad_file, bad.join("\n")).unwrap();
        let stopped = annal(&["import", "--node", &url, "--signer", path(&signer), path(&bad_file)]);
        let said = String::from_utf8_lossy(&stopped.stderr);
        assert_eq!(stopped.status.code(), Some(1), "{said}");
        assert!(said.contains(want), "{said}");
    }
    assert_eq!(log_size(&cluster), 0, "nothing of a file with a bad line is sent");

    let run = |extra: &[&str]| {
        let mut args =
            vec!["import", "--node", &url, "--signer", path(&signer), path(&file), "--batch", "400", "--json"];
        args.extend(extra);
        let out = annal(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            out.status.code(),
            Some(2),
            "one record is refused: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<Value>(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    };
    let first = run(&["--wait"]);
    assert_eq!((first["records"].as_u64(), first["accepted"].as_u64()), (Some(1100), Some(1099)), "{first}");
    assert_eq!((first["refused"].as_u64(), first["already_final"].as_u64()), (Some(1), Some(0)), "{first}");
    let refusal = &first["refusals"][0];
    assert_eq!((refusal["line"].as_u64(), refusal["error"].as_str()), (Some(552), Some("refused")), "{first}");
    assert_eq!(first["last_accepted_status"], "final", "{first}");
    let nonce = first["first_nonce"].as_u64().expect("the first nonce");
    assert_eq!(first["last_nonce"].as_u64(), Some(nonce + 1099));
    assert_eq!(log_size(&cluster), 1099);
    let doc = json(&["history", "--node", &url, "--namespace", &own, "--key", "import/doc", "--json"]);
    assert_eq!(doc["head"]["version"], 1, "{doc}");

    let again = run(&["--first-nonce", &nonce.to_string()]);
    assert_eq!((again["accepted"].as_u64(), again["already_final"].as_u64()), (Some(1099), Some(1099)), "{again}");
    assert_eq!(again["refusals"][0]["line"].as_u64(), Some(552), "{again}");
    let height = cluster.height(0);
    cluster.wait_heights(&[0], height + 2, std::time::Duration::from_secs(60));
    assert_eq!(log_size(&cluster), 1099, "the same file again appends nothing");
}
