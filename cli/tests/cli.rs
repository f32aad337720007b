//! The `annal` binary's key and genesis commands, run as a user would.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn annal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_annal")).args(args).output().expect("annal runs")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("annal-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "annal failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keys_new_writes_a_private_key_and_prints_its_public_key() {
    // Goal: `annal keys new` writes a 0600 key file whose public key it prints, and never overwrites.
    let dir = temp("keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("officer.key");
    let printed = stdout(&annal(&["keys", "new", "--out", path.to_str().unwrap()]));
    assert_eq!(mode(&path), 0o600);
    let key = annal_ledger::keys::SecretKey::read_file(&path).unwrap();
    assert_eq!(printed.trim(), key.public().to_hex());
    let again = annal(&["keys", "new", "--out", path.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains(path.to_str().unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn genesis_new_writes_genesis_and_key_folders() {
    // Goal: `annal genesis new` writes a valid genesis.json and one key folder per validator and agency, matching it.
    let dir = temp("genesis");
    let out = stdout(&annal(&[
        "genesis",
        "new",
        "--chain-id",
        "test-chain",
        "--validators",
        "4",
        "--agencies",
        "2",
        "--out",
        dir.to_str().unwrap(),
    ]));
    let file = dir.join("genesis.json");
    let genesis = annal_ledger::genesis::Genesis::load(&file).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(json["chain_id"], "test-chain");
    assert_eq!(json["validators"].as_array().unwrap().len(), 4);
    assert_eq!(json["agencies"].as_array().unwrap().len(), 2);
    assert!(json["agencies"][1]["namespaces"].as_array().unwrap().len() == 1);
    for (i, v) in genesis.validators.iter().enumerate() {
        let vdir = dir.join(format!("validator-{i}"));
        assert_eq!(mode(&vdir), 0o700);
        let consensus = annal_ledger::keys::SecretKey::read_file(&vdir.join("consensus.key")).unwrap();
        let p2p = annal_ledger::keys::SecretKey::read_file(&vdir.join("p2p.key")).unwrap();
        assert_eq!((consensus.public(), p2p.public()), (v.consensus_key, v.p2p_key));
    }
    for (j, a) in genesis.agencies.iter().enumerate() {
        let key = annal_ledger::keys::SecretKey::read_file(&dir.join(format!("agency-{j}/submitter.key"))).unwrap();
        assert_eq!(a.submitter_keys, vec![key.public()]);
    }
    let hash = hex::encode(genesis.hash());
    assert!(out.contains(&hash), "genesis new prints the trust root");
    assert_eq!(stdout(&annal(&["genesis", "hash", file.to_str().unwrap()])).trim(), hash);
    let vkeys = stdout(&annal(&["genesis", "vkeys", file.to_str().unwrap()]));
    assert_eq!(vkeys.lines().count(), 4);
    assert!(vkeys.lines().all(|l| annal_ledger::note::VerifierKey::parse(l).is_ok()));
    let again = annal(&["genesis", "new", "--chain-id", "test-chain", "--out", dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "an existing genesis is never overwritten");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn genesis_errors_name_the_fault() {
    // Goal: a broken genesis file fails with exit code 1 and a message naming the file and the field.
    let dir = temp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("genesis.json");
    std::fs::write(&file, r#"{"chain_id": "x", "genesis_time_ms": 0, "validators": [], "agencies": [], "params": {}}"#)
        .unwrap();
    let o = annal(&["genesis", "hash", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("genesis.json") && err.contains("missing field"), "{err}");
    let o = annal(&["genesis", "new", "--chain-id", "Bad Id", "--out", dir.join("n").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("chain_id"));
    assert!(!dir.join("n").exists(), "a refused genesis leaves no files behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn node_run_refuses_bad_configs_and_readable_keys_and_says_why() {
    // Goal: `annal node run` stops before touching the network when its config names an unknown key,
    // when a key file is readable by others, or when its keys are not the genesis validator's.
    let dir = temp("node-run");
    stdout(&annal(&["genesis", "new", "--chain-id", "c", "--validators", "1", "--out", dir.to_str().unwrap()]));
    let v = dir.join("validator-0");
    let config = v.join("node.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "genesis = \"../genesis.json\"\ndata_dir = \"data\"\nconsensus_key = \"consensus.key\"\n\
                 p2p_key = \"p2p.key\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\napi_listen = \"127.0.0.1:0\"\n{extra}"
            ),
        )
        .unwrap()
    };
    let run = || annal(&["node", "run", "--config", config.to_str().unwrap()]);
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).to_string();

    write("colour = \"blue\"\n");
    let o = run();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("colour"), "{}", stderr(&o));

    write("");
    std::fs::set_permissions(v.join("consensus.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    std::fs::set_permissions(v.join("consensus.key"), std::fs::Permissions::from_mode(0o600)).unwrap();

    // The p2p key swapped for another: the consensus key is the validator's, the p2p key is not.
    std::fs::remove_file(v.join("p2p.key")).unwrap();
    stdout(&annal(&["keys", "new", "--out", v.join("p2p.key").to_str().unwrap()]));
    let o = run();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("p2p_key"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
