//! Genesis loading refuses every malformed file with a message naming the fault;
//! the trust root ignores formatting; key files are private.

mod common;

use annal_ledger::genesis::Genesis;
use annal_ledger::keys::SecretKey;
use annal_ledger::Error;
use common::*;
use serde_json::{json, Value};

fn base() -> Value {
    serde_json::to_value(genesis()).unwrap()
}

/// Loads `v` and returns the refusal message.
fn refusal(v: Value) -> String {
    match Genesis::from_json(&v.to_string()) {
        Err(Error::Genesis { detail }) => detail,
        other => panic!("expected a genesis error, got {other:?}"),
    }
}

#[test]
fn the_fixture_loads() {
    // Goal: a well-formed genesis loads and round-trips through JSON.
    let g = Genesis::from_json(&base().to_string()).unwrap();
    assert_eq!(g, genesis());
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    // Goal: a typo'd field at top level, in a validator, an agency or params is an error naming it.
    for path in [&[][..], &["validators", "0"][..], &["agencies", "1"][..], &["params"][..]] {
        let mut v = base();
        let mut obj = &mut v;
        for p in path {
            obj = if let Ok(i) = p.parse::<usize>() { &mut obj[i] } else { &mut obj[*p] };
        }
        obj.as_object_mut().unwrap().insert("votng_power".into(), json!(1));
        let msg = refusal(v);
        assert!(msg.contains("unknown field `votng_power`"), "{path:?}: {msg}");
    }
}

#[test]
fn missing_fields_are_refused() {
    // Goal: a missing required field is an error naming it.
    let mut v = base();
    v["params"].as_object_mut().unwrap().remove("block_records_max");
    assert!(refusal(v).contains("block_records_max"));
}

#[test]
fn no_validators_is_refused() {
    // Goal: a chain without validators is refused.
    let mut v = base();
    v["validators"] = json!([]);
    assert!(refusal(v).contains("no validators"));
}

#[test]
fn duplicate_names_and_keys_are_refused() {
    // Goal: duplicate validator names, consensus keys, p2p keys, agency names and submitter keys are each refused.
    let mut v = base();
    v["validators"][1]["name"] = v["validators"][0]["name"].clone();
    assert!(refusal(v).contains("duplicate validator name"));
    let mut v = base();
    v["validators"][1]["consensus_key"] = v["validators"][0]["consensus_key"].clone();
    assert!(refusal(v).contains("consensus_key"));
    let mut v = base();
    v["validators"][2]["p2p_key"] = v["validators"][0]["consensus_key"].clone();
    assert!(refusal(v).contains("p2p_key"));
    let mut v = base();
    v["agencies"][1]["name"] = v["agencies"][0]["name"].clone();
    assert!(refusal(v).contains("duplicate agency name"));
    let mut v = base();
    v["agencies"][1]["submitter_keys"] = json!([v["agencies"][0]["submitter_keys"][0].clone()]);
    assert!(refusal(v).contains("submitter key"));
    let mut v = base();
    v["agencies"][1]["namespaces"] = json!(["land-titles"]);
    assert!(refusal(v).contains("already granted"));
}

#[test]
fn zero_and_overflowing_power_are_refused() {
    // Goal: power 0 is refused; powers whose sum overflows the quorum arithmetic are refused.
    let mut v = base();
    v["validators"][3]["power"] = json!(0);
    assert!(refusal(v).contains("power is 0"));
    let mut v = base();
    v["validators"][0]["power"] = json!(u64::MAX / 4);
    v["validators"][1]["power"] = json!(1);
    assert!(refusal(v).contains("overflows"));
}

#[test]
fn limits_whose_sum_or_size_overflows_are_refused() {
    // Goal (review, session 22): limits are summed without overflow (a debug
    // build panicked, a release build wrapped and accepted), and block limits
    // are bounded (a node adds them when it sizes its messages).
    let mut v = base();
    v["params"]["body_bytes_max"] = json!(u64::MAX);
    v["params"]["metadata_bytes_max"] = json!(1);
    assert!(refusal(v).contains("cannot hold a record"));
    for (field, value) in
        [("block_bytes_max", u64::MAX), ("block_records_max", u64::MAX), ("block_records_max", 1 << 21)]
    {
        let mut v = base();
        v["params"][field] = json!(value);
        let why = refusal(v);
        assert!(why.contains("are at most"), "{field} = {value}: {why}");
    }
}

#[test]
fn bad_keys_and_names_are_refused() {
    // Goal: a short hex key, a chain id with capitals, a zero limit, and validator names a
    // signed note cannot carry (empty, a space, '+', a control character) are refused.
    for name in ["", "v 1", "v+1", "v\u{1}"] {
        let mut v = base();
        v["validators"][0]["name"] = json!(name);
        assert!(
            refusal(v).contains("a name is 1 to 64 bytes with no whitespace, '+' or control character"),
            "{name:?}"
        );
    }
    let mut v = base();
    v["validators"][0]["consensus_key"] = json!("abcd");
    assert!(refusal(v).contains("public key"));
    let mut v = base();
    v["chain_id"] = json!("Land Registry");
    assert!(refusal(v).contains("chain_id"));
    let mut v = base();
    v["params"]["block_records_max"] = json!(0);
    assert!(refusal(v).contains("block_records_max is 0"));
}

#[test]
fn trust_root_ignores_formatting_but_not_values() {
    // Goal: whitespace and field order do not change the genesis hash; any value does.
    let g = genesis();
    let compact = serde_json::to_string(&g).unwrap();
    let mut reordered: serde_json::Map<String, Value> = serde_json::Map::new();
    let v = base();
    for k in ["params", "agencies", "validators", "genesis_time_ms", "chain_id"] {
        reordered.insert(k.into(), v[k].clone());
    }
    let pretty = serde_json::to_string_pretty(&Value::Object(reordered)).unwrap();
    assert_eq!(Genesis::from_json(&compact).unwrap().hash(), g.hash());
    assert_eq!(Genesis::from_json(&pretty).unwrap().hash(), g.hash());
    let mut changed = g.clone();
    changed.validators[0].power = 2;
    assert_ne!(changed.hash(), g.hash());
}

#[test]
fn key_files_are_private_and_checked() {
    // Goal: a key file is written 0600, read back, and refused when readable by others or tampered.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("annal-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.key");
    let key = SecretKey::generate();
    key.write_file(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(SecretKey::read_file(&path).unwrap().public(), key.public());
    assert!(key.write_file(&path).is_err(), "an existing key file is never overwritten");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let msg = SecretKey::read_file(&path).unwrap_err().to_string();
    assert!(msg.contains("chmod 600"), "{msg}");
    let tampered = dir.join("b.key");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&key.public().to_hex(), &SecretKey::generate().public().to_hex());
    std::fs::write(&tampered, text).unwrap();
    std::fs::set_permissions(&tampered, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(SecretKey::read_file(&tampered).unwrap_err().to_string().contains("does not match"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_documented_example_loads() {
    // Goal: genesis/example.json, which genesis/README.md documents, stays a valid genesis.
    let path = manifest_dir().join("../genesis/example.json");
    let g = Genesis::load(&path).unwrap();
    assert_eq!(g.chain_id, "land-registry-example");
    assert_eq!(g.validators.len(), 4);
}

#[test]
fn weak_and_invalid_keys_are_refused() {
    // Goal: a small-order key (the identity point) and bytes that are no curve point are refused, naming the field.
    let identity = format!("01{}", "00".repeat(31));
    let mut v = base();
    v["validators"][0]["consensus_key"] = json!(identity);
    assert!(refusal(v).contains("weak"));
    let mut v = base();
    v["agencies"][0]["submitter_keys"][0] = json!(identity);
    assert!(refusal(v).contains("submitter key"));
    // y = 2 is not the y-coordinate of any curve point.
    let not_a_point = format!("02{}", "00".repeat(31));
    let mut v = base();
    v["validators"][1]["p2p_key"] = json!(not_a_point);
    let msg = refusal(v);
    assert!(msg.contains("p2p_key") && msg.contains("not a valid"), "{msg}");
}
