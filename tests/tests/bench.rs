//! Issue 8's harness: `annal bench cluster` starts real validators, drives a
//! load through the API and reports what it measured as one JSON object on
//! standard output, with the catch-up and audit measurements when asked.

use std::process::Command;

use annal_tests::{annal_bin, scratch};
use serde_json::Value;

#[test]
fn bench_cluster_reports_one_json_object_of_measured_numbers() {
    // Goal: at a low steady rate every offered record is finalized, the report is the only thing
    // on standard output, and the catch-up and audit runs cover the whole chain.
    let dir = scratch("bench").join("chain");
    let out = Command::new(annal_bin())
        .args(["bench", "cluster", "--validators", "4", "--duration", "6", "--warmup", "2", "--rate", "200"])
        .args(["--signers", "2", "--batch", "50", "--catch-up", "--audit", "--json", "--dir"])
        .arg(&dir)
        .output()
        .expect("running annal bench cluster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "annal bench cluster failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));
    let number = |name: &str| report[name].as_f64().unwrap_or_else(|| panic!("{name} missing: {report}"));
    let rate = number("finalized_records_per_s");
    // A short window at a low rate: one slow block moves it, so only the order of magnitude is checked.
    assert!((100.0..=300.0).contains(&rate), "finalized {rate}/s at 200/s offered: {report}");
    assert_eq!(number("records_refused"), 0.0, "{report}");
    assert!(number("latency_probes") >= 10.0, "{report}");
    let (p50, p99) = (number("latency_ms_p50"), number("latency_ms_p99"));
    assert!(0.0 < p50 && p50 <= p99, "{report}");
    assert!(number("verify_per_s_per_core") > 1000.0, "{report}");
    let size = number("final_log_size");
    let caught_up = number("catch_up_records");
    assert!(0.0 < caught_up && caught_up <= size, "the restarted validator caught up: {report}");
    assert_eq!(number("audit_records"), size, "the audit replayed the whole log");
    // CPU per finalized record is each node's cores over the finalized rate (rounded in the
    // report, hence 1 %), in µs; the loaded validators spent some.
    let cores = report["cpu_cores_per_node"].as_array().expect("CPU per node");
    let per_record = report["cpu_us_per_record_per_node"].as_array().expect("CPU per record per node");
    assert_eq!((cores.len(), per_record.len()), (4, 4), "{report}");
    for (i, (c, us)) in cores.iter().zip(per_record).enumerate() {
        let (c, us) = (c.as_f64().expect("cores"), us.as_f64().expect("µs per record"));
        assert!((us - c * 1e6 / rate).abs() <= 0.05 + 0.01 * us, "node {i}: {c} cores, {us} µs: {report}");
        assert!(i == 3 || us > 0.0, "node {i}: {report}");
    }
    let rss = report["peak_rss_mb_per_node"].as_array().expect("peak RSS per node");
    assert_eq!(rss.len(), 4);
    assert!(rss.iter().all(|r| r.as_f64().is_some_and(|mb| mb > 1.0)), "{report}");
    // Node counters over the window: every loaded validator committed blocks; the one stopped for
    // the catch-up answered nothing.
    let committed = report["blocks_committed_per_node"].as_array().expect("blocks committed per node");
    assert_eq!(committed.len(), 4, "{report}");
    assert!(committed[..3].iter().all(|b| b.as_u64().is_some_and(|n| n > 0)), "{report}");
    assert!(committed[3].is_null(), "{report}");
    for key in ["proposals_rebuilt_per_node", "proposals_fetched_per_node", "record_batches_dropped_per_node"] {
        assert!(report[key].as_array().is_some_and(|a| a.len() == 4 && a[0].is_u64()), "{key}: {report}");
    }
    // The load's two signers go to validators 0 and 1 in requests of 50 records, gossiped in
    // batches of tens of records on average (the probes go one at a time to every validator).
    let per_node = |key: &str| report[key].as_array().unwrap_or_else(|| panic!("{key}: {report}")).clone();
    let (batches, records) = (per_node("record_batches_gossiped_per_node"), per_node("records_gossiped_per_node"));
    for (b, r) in batches.iter().zip(&records).take(2) {
        let (b, r) = (b.as_u64().expect("batches"), r.as_u64().expect("records"));
        assert!(b > 0 && r >= 10 * b, "{r} records gossiped in {b} batches: {report}");
    }
    let _ = std::fs::remove_dir_all(dir.parent().expect("scratch folder"));
}

#[test]
fn bench_verify_measures_the_batch_and_keys_asked_for_and_refuses_others() {
    // Goal: `annal bench verify` checks batches of the size and keys given, says so in its
    // report, and refuses a shape it cannot make (more keys than signatures, or than 256).
    let out = Command::new(annal_bin())
        .args(["bench", "verify", "--seconds", "1", "--batch", "100", "--keys", "4", "--json"])
        .output()
        .expect("running annal bench verify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!((report["batch"].as_u64(), report["keys"].as_u64()), (Some(100), Some(4)), "{report}");
    assert!(report["verifications_per_s_per_core"].as_f64().is_some_and(|r| r > 1000.0), "{report}");
    for bad in
        [["--batch", "10", "--keys", "20"], ["--batch", "1000", "--keys", "300"], ["--batch", "0", "--keys", "1"]]
    {
        let out = Command::new(annal_bin()).args(["bench", "verify", "--seconds", "1"]).args(bad).output().unwrap();
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("the batch must be 1 to 10,000"), "{bad:?}");
    }
}
