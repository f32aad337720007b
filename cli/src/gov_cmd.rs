//! `annal gov`: propose and approve membership changes, and follow them
//! (ADR 0006, docs/OPERATIONS.md "Governance").
//!
//! A proposal or an approval is an ordinary record in the namespace
//! `annal.gov`, signed here with a validator's consensus key and submitted
//! the way `annal submit` submits (`node_cmds::signing_facts`, `send_signed`).
//! `list`, `show` and `members` read the node's governance routes (docs/API.md).

use std::path::{Path, PathBuf};

use annal_ledger::genesis::{Agency, Params, Validator};
use annal_ledger::gov::{approval_key, Change, GovAction, GOV_NAMESPACE, PROPOSAL_PREFIX};
use annal_ledger::keys::{PublicKey, SecretKey};
use annal_ledger::record::{Body, Op, RecordId};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{Client, ClientError, SMALL_BYTES_MAX};
use crate::node_cmds::{
    build_record, parse_id, read_limited, send_signed, signing_facts, Draft, SigningFacts, Submitted,
};

/// How many heights after the node's tip a proposal expires unless `--expires-in` says otherwise.
pub const EXPIRES_IN_DEFAULT: u64 = 1000;
/// The largest `--file` of `set-params` read.
pub const PARAMS_FILE_BYTES_MAX: u64 = 64 * 1024;
/// The largest proposal list read.
const PROPOSALS_BYTES_MAX: u64 = 16 << 20;

#[derive(clap::Subcommand)]
pub enum GovCommand {
    /// Propose a membership change, signed with this validator's consensus key.
    ///
    /// The proposal counts as the proposer's approval. It takes effect two
    /// heights after the block in which approvals pass 2/3 of the voting power
    /// (or at --effective-height, if later) — a validator change at the next
    /// epoch start from there (genesis `epoch_blocks`) — and expires unapproved after
    /// --expires-in heights. Prints the proposal id, which the other
    /// validators pass to `annal gov approve`.
    #[command(after_help = "Examples:
  annal gov propose --node http://127.0.0.1:8080 --signer validator-1/consensus.key \\
    add-agency --name court --key <HEX> --namespace court-orders
  annal gov propose --node http://127.0.0.1:8080 --signer validator-1/consensus.key \\
    rotate-key --agency land --old <HEX> --new <HEX>
  annal gov propose --node http://127.0.0.1:8080 --signer validator-1/consensus.key --expires-in 500 \\
    set-power --name validator-2 --power 2")]
    Propose(ProposeArgs),
    /// Approve an open proposal, signed with this validator's consensus key.
    #[command(
        after_help = "Example: annal gov approve --node http://127.0.0.1:8081 --signer validator-2/consensus.key <ID>
Then:    annal gov show --node http://127.0.0.1:8081 <ID>"
    )]
    Approve(ApproveArgs),
    /// List every proposal: open, scheduled, applied, expired or failed, with its approvals so far.
    #[command(after_help = "Example: annal gov list --node http://127.0.0.1:8080")]
    List {
        /// The node's API address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        node: String,
        /// Print the node's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one proposal: its change, status and who approved it with how much power.
    #[command(after_help = "Example: annal gov show --node http://127.0.0.1:8080 <ID> --json")]
    Show {
        /// The node's API address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        node: String,
        /// The proposal id (64 hex characters), as `annal gov propose` printed it.
        id: String,
        /// Print the node's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the validators, agencies and parameters in force for the next block.
    #[command(after_help = "Example: annal gov members --node http://127.0.0.1:8080")]
    Members {
        /// The node's API address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        node: String,
        /// Print the node's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl GovCommand {
    /// Whether the command was asked for JSON output.
    pub fn json(&self) -> bool {
        match self {
            GovCommand::Propose(a) => a.signing.json,
            GovCommand::Approve(a) => a.signing.json,
            GovCommand::List { json, .. } | GovCommand::Show { json, .. } | GovCommand::Members { json, .. } => *json,
        }
    }
}

/// The options of every command that signs a governance record.
#[derive(clap::Args)]
pub struct SigningArgs {
    /// The node's API address, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    node: String,
    /// This validator's consensus key file (e.g. devnet/validator-1/consensus.key); its public
    /// key must be the consensus key of a validator in force.
    #[arg(long)]
    signer: PathBuf,
    /// Return once the node accepted the record, without waiting for a final block.
    #[arg(long)]
    no_wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ProposeArgs {
    #[command(flatten)]
    signing: SigningArgs,
    /// The earliest height the change takes effect at (default: two heights after its approval;
    /// a validator change waits for the next epoch start).
    #[arg(long, value_name = "H")]
    effective_height: Option<u64>,
    /// Heights after the node's current tip until the proposal expires unless approved.
    #[arg(long, value_name = "N", default_value_t = EXPIRES_IN_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    expires_in: u64,
    /// The change.
    #[command(subcommand)]
    change: ChangeArgs,
}

#[derive(clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    signing: SigningArgs,
    /// The proposal id (64 hex characters), as `annal gov propose` printed it.
    id: String,
}

/// The change a proposal makes, as typed on the command line.
#[derive(clap::Subcommand, Debug)]
pub enum ChangeArgs {
    /// Add a validator (one change moves at most 1/3 of the total power).
    AddValidator {
        /// Its name, unique among validators.
        #[arg(long)]
        name: String,
        /// Its consensus public key (hex).
        #[arg(long, value_name = "HEX", value_parser = public_key)]
        consensus_key: PublicKey,
        /// The public key of its libp2p identity (hex).
        #[arg(long, value_name = "HEX", value_parser = public_key)]
        p2p_key: PublicKey,
        /// Its voting power.
        #[arg(long)]
        power: u64,
    },
    /// Remove a validator.
    RemoveValidator {
        #[arg(long)]
        name: String,
    },
    /// Change a validator's voting power.
    SetPower {
        #[arg(long)]
        name: String,
        #[arg(long)]
        power: u64,
    },
    /// Add an agency with its officers' keys and its namespaces.
    AddAgency {
        /// Its name, unique among agencies.
        #[arg(long)]
        name: String,
        /// An officer's public key (hex); repeat for each.
        #[arg(long = "key", value_name = "HEX", value_parser = public_key, required = true)]
        keys: Vec<PublicKey>,
        /// A namespace it owns; repeat for each.
        #[arg(long = "namespace", value_name = "NS", required = true)]
        namespaces: Vec<String>,
    },
    /// Remove an agency: its keys can no longer submit.
    RemoveAgency {
        #[arg(long)]
        name: String,
    },
    /// Grant a namespace to an agency.
    GrantNamespace {
        #[arg(long)]
        agency: String,
        #[arg(long)]
        namespace: String,
    },
    /// Withdraw a namespace from an agency.
    WithdrawNamespace {
        #[arg(long)]
        agency: String,
        #[arg(long)]
        namespace: String,
    },
    /// Add an officer's key to an agency.
    AddKey {
        #[arg(long)]
        agency: String,
        #[arg(long, value_name = "HEX", value_parser = public_key)]
        key: PublicKey,
    },
    /// Replace an agency's key: the old one can no longer submit from the change's height.
    RotateKey {
        #[arg(long)]
        agency: String,
        #[arg(long, value_name = "HEX", value_parser = public_key)]
        old: PublicKey,
        #[arg(long, value_name = "HEX", value_parser = public_key)]
        new: PublicKey,
    },
    /// Revoke an agency's key.
    RevokeKey {
        #[arg(long)]
        agency: String,
        #[arg(long, value_name = "HEX", value_parser = public_key)]
        key: PublicKey,
    },
    /// Replace the chain parameters with those of a JSON file (the genesis file's "params" object).
    SetParams {
        #[arg(long, value_name = "PARAMS.json")]
        file: PathBuf,
    },
}

fn public_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(s.trim()).map_err(|e| e.to_string())
}

impl ChangeArgs {
    /// The ledger's `Change` (reads the parameters file of `set-params`).
    pub fn into_change(self) -> Result<Change> {
        Ok(match self {
            ChangeArgs::AddValidator { name, consensus_key, p2p_key, power } => {
                Change::AddValidator(Validator { name, consensus_key, p2p_key, power })
            }
            ChangeArgs::RemoveValidator { name } => Change::RemoveValidator { name },
            ChangeArgs::SetPower { name, power } => Change::SetPower { name, power },
            ChangeArgs::AddAgency { name, keys, namespaces } => {
                Change::AddAgency(Agency { name, submitter_keys: keys, namespaces })
            }
            ChangeArgs::RemoveAgency { name } => Change::RemoveAgency { name },
            ChangeArgs::GrantNamespace { agency, namespace } => Change::GrantNamespace { agency, namespace },
            ChangeArgs::WithdrawNamespace { agency, namespace } => Change::WithdrawNamespace { agency, namespace },
            ChangeArgs::AddKey { agency, key } => Change::AddKey { agency, key },
            ChangeArgs::RotateKey { agency, old, new } => Change::RotateKey { agency, old, new },
            ChangeArgs::RevokeKey { agency, key } => Change::RevokeKey { agency, key },
            ChangeArgs::SetParams { file } => Change::SetParams(read_params(&file)?),
        })
    }
}

/// Reads chain parameters from JSON, refusing unknown or missing fields.
pub fn read_params(path: &Path) -> Result<Params> {
    let bytes = read_limited(path, PARAMS_FILE_BYTES_MAX, "parameters file")?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a parameters object", path.display()))
}

/// The record key of a proposal: unique per proposer and nonce.
pub fn proposal_key(proposer: &PublicKey, nonce: u64) -> String {
    format!("{PROPOSAL_PREFIX}{}-{nonce}", &proposer.to_hex()[..16])
}

fn gov_draft(key: String, action: &GovAction) -> Draft {
    Draft {
        namespace: GOV_NAMESPACE.into(),
        key,
        op: Op::Publish,
        body: Body::Inline(action.to_bytes()),
        metadata: Default::default(),
    }
}

/// The draft of a proposal by `proposer`, signed with `nonce`.
pub fn proposal_draft(action: &GovAction, proposer: &PublicKey, nonce: u64) -> Draft {
    gov_draft(proposal_key(proposer, nonce), action)
}

/// The draft of `approver`'s approval of `proposal`.
pub fn approval_draft(proposal: RecordId, approver: &PublicKey) -> Draft {
    gov_draft(approval_key(&proposal, approver), &GovAction::Approve { proposal })
}

/// Signs `draft` with `signer` (nonce and chain id from `facts`) and submits it; a signer that
/// is no validator is told so plainly.
fn sign_and_send(
    client: &Client,
    args: &SigningArgs,
    signer: &SecretKey,
    facts: &SigningFacts,
    draft: Draft,
) -> Result<Submitted> {
    let submitter = signer.public();
    let record = build_record(&facts.chain_id, draft, None, submitter, facts.nonce)?;
    send_signed(client, &record.sign(signer), !args.no_wait, args.json).map_err(|e| {
        let not_validator = matches!(e.downcast_ref::<ClientError>(),
            Some(ClientError::Refused { detail, .. }) if detail.contains("not the consensus key of a validator"));
        if !not_validator {
            return e;
        }
        e.context(format!(
            "--signer {} holds key {submitter}, which is not the consensus key of a validator in force \
             (`annal gov members --node {}` lists them); sign with the validator's consensus.key",
            args.signer.display(),
            client.base()
        ))
    })
}

pub fn run(command: GovCommand) -> Result<()> {
    match command {
        GovCommand::Propose(args) => propose(args),
        GovCommand::Approve(args) => approve(args),
        GovCommand::List { node, json } => list(&node, json),
        GovCommand::Show { node, id, json } => show(&node, &id, json),
        GovCommand::Members { node, json } => members(&node, json),
    }
}

fn propose(args: ProposeArgs) -> Result<()> {
    let change = args.change.into_change()?;
    let client = Client::new(&args.signing.node)?;
    let signer = SecretKey::read_file(&args.signing.signer)?;
    let submitter = signer.public();
    let facts = signing_facts(&client, &submitter)?;
    let expires_height = facts
        .height
        .checked_add(args.expires_in)
        .ok_or_else(|| anyhow!("--expires-in {} overflows the node's height {}", args.expires_in, facts.height))?;
    let action = GovAction::Propose { change: change.clone(), effective_height: args.effective_height, expires_height };
    let draft = proposal_draft(&action, &submitter, facts.nonce);
    let sent = sign_and_send(&client, &args.signing, &signer, &facts, draft)?;
    let id = sent.id;
    if args.signing.json {
        let mut out = json!({
            "id": id.to_hex(), "status": sent.status, "change": change, "description": change.describe(),
            "effective_height": args.effective_height, "expires_height": expires_height,
        });
        if let Some((index, height)) = sent.placed {
            out["index"] = json!(index);
            out["height"] = json!(height);
        }
        println!("{out}");
        return Ok(());
    }
    println!("{id}");
    match sent.placed {
        Some((_, height)) => println!("proposed at height {height}: {}", change.describe()),
        None => println!("proposal {}: {}", sent.status, change.describe()),
    }
    println!("expires unless approved by the end of block {expires_height}; the other validators approve it with:");
    println!("  annal gov approve --node URL --signer CONSENSUS_KEY {id}");
    Ok(())
}

fn approve(args: ApproveArgs) -> Result<()> {
    let client = Client::new(&args.signing.node)?;
    let id = parse_id(&args.id)?;
    let signer = SecretKey::read_file(&args.signing.signer)?;
    let submitter = signer.public();
    let before = fetch_proposal(&client, &id)?;
    if before.status.name != "open" {
        bail!("proposal {id} is {}; only an open proposal can be approved", status_text(&before));
    }
    if before.approvals.iter().any(|a| a.consensus_key == submitter.to_hex()) {
        bail!("key {submitter} ({}) has approved proposal {id} already", args.signing.signer.display());
    }
    let facts = signing_facts(&client, &submitter)?;
    let sent = sign_and_send(&client, &args.signing, &signer, &facts, approval_draft(id, &submitter))?;
    let after = match sent.placed {
        Some(_) => Some(fetch_proposal(&client, &id)?),
        None => None,
    };
    if args.signing.json {
        let mut out = json!({ "approval": sent.id.to_hex(), "status": sent.status, "proposal": id.to_hex() });
        if let Some((index, height)) = sent.placed {
            out["index"] = json!(index);
            out["height"] = json!(height);
        }
        if let Some(p) = &after {
            out["proposal_status"] = json!(p.status.name);
            out["approving_power"] = json!(p.approving_power);
            out["total_power"] = json!(p.total_power);
        }
        println!("{out}");
        return Ok(());
    }
    println!("{}", sent.id);
    match (&after, sent.placed) {
        (Some(p), Some((_, height))) => {
            println!("approval final at height {height}; proposal {id} is {}", status_text(p));
            println!("approved by {} of {} power ({})", p.approving_power, p.total_power, quorum_text(p));
        }
        _ => println!("approval {}; `annal gov show --node {} {id}` shows the proposal", sent.status, client.base()),
    }
    Ok(())
}

// ---------------------------------------------------------------- reading proposals

/// A proposal as `GET /v1/gov/proposals/{id}` shows it (the fields the text output uses).
#[derive(Deserialize, Debug, Clone)]
pub struct ProposalView {
    pub id: String,
    pub status: StatusView,
    pub description: String,
    pub proposer: String,
    pub height: u64,
    pub effective_height: Option<u64>,
    pub expires_height: u64,
    pub approvals: Vec<ApprovalView>,
    pub approving_power: u64,
    pub total_power: u64,
}

#[derive(Deserialize, Debug, Clone)]
pub struct StatusView {
    pub name: String,
    pub height: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ApprovalView {
    pub consensus_key: String,
    pub validator: Option<String>,
    pub power: Option<u64>,
}

fn fetch_proposal(client: &Client, id: &RecordId) -> Result<ProposalView> {
    let value = fetch_proposal_json(client, id)?;
    serde_json::from_value(value)
        .map_err(|e| anyhow!("{}: the proposal answer is not as docs/API.md says: {e}", client.base()))
}

fn fetch_proposal_json(client: &Client, id: &RecordId) -> Result<Value> {
    match client.get_json::<Value>(&format!("/v1/gov/proposals/{id}"), SMALL_BYTES_MAX) {
        Err(e) if e.code() == Some("not_found") => bail!(
            "the node at {} knows no proposal {id} (is it final yet? `annal gov list --node {}` lists them)",
            client.base(),
            client.base()
        ),
        other => Ok(other?),
    }
}

/// Where a proposal stands, in a few words.
pub fn status_text(p: &ProposalView) -> String {
    let at = p.status.height.map_or("?".to_string(), |h| h.to_string());
    match p.status.name.as_str() {
        "open" => format!("open (expires after height {})", p.expires_height),
        "scheduled" => format!("scheduled for height {at}"),
        "applied" => format!("applied at height {at}"),
        "expired" => format!("expired at height {at}"),
        "failed" => format!("failed at height {at}: {}", p.status.reason.as_deref().unwrap_or("?")),
        other => other.to_string(),
    }
}

/// The least power that is more than 2/3 of `total`.
pub fn quorum_power(total: u64) -> u64 {
    (2 * total as u128 / 3 + 1) as u64
}

fn quorum_text(p: &ProposalView) -> String {
    let need = quorum_power(p.total_power);
    if p.approving_power >= need {
        format!("more than 2/3 of {}", p.total_power)
    } else {
        format!("{need} needed: {} more", need - p.approving_power)
    }
}

fn list(node: &str, json: bool) -> Result<()> {
    let client = Client::new(node)?;
    // Page by page (the node answers at most 1,000 at a time).
    let mut all = Vec::new();
    let mut path = "/v1/gov/proposals?limit=1000".to_string();
    loop {
        let page: Value = client.get_json(&path, PROPOSALS_BYTES_MAX)?;
        all.extend(page["proposals"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/gov/proposals?limit=1000&after={next}"),
            None => break,
        }
    }
    let value = serde_json::json!({ "proposals": all });
    if json {
        println!("{value}");
        return Ok(());
    }
    let proposals: Vec<ProposalView> = serde_json::from_value(value["proposals"].clone())
        .map_err(|e| anyhow!("{}: the proposal list is not as docs/API.md says: {e}", client.base()))?;
    if proposals.is_empty() {
        println!("no proposals");
        return Ok(());
    }
    for p in &proposals {
        println!("{}  {:<36} {:>5}/{:<5} {}", p.id, status_text(p), p.approving_power, p.total_power, p.description);
    }
    Ok(())
}

fn show(node: &str, id: &str, json: bool) -> Result<()> {
    let client = Client::new(node)?;
    let id = parse_id(id)?;
    let value = fetch_proposal_json(&client, &id)?;
    if json {
        println!("{value}");
        return Ok(());
    }
    let p: ProposalView = serde_json::from_value(value.clone())
        .map_err(|e| anyhow!("{}: the proposal answer is not as docs/API.md says: {e}", client.base()))?;
    println!("proposal   {}", p.id);
    println!("change     {}", p.description);
    println!("           {}", value["change"]);
    println!("status     {}", status_text(&p));
    println!("proposed   at height {} by {}", p.height, p.proposer);
    let effective = p.effective_height.map_or("two heights after approval".to_string(), |h| format!("height {h}"));
    println!("effective  {effective} at the earliest; expires after height {}", p.expires_height);
    println!("approvals  {} of {} power ({})", p.approving_power, p.total_power, quorum_text(&p));
    for a in &p.approvals {
        let who = a.validator.as_deref().unwrap_or("(not in the set in force)");
        let power = a.power.map_or("-".to_string(), |n| n.to_string());
        println!("  {who:<24} power {power:<6} {}", a.consensus_key);
    }
    Ok(())
}

fn members(node: &str, json: bool) -> Result<()> {
    let client = Client::new(node)?;
    let v: Value = client.get_json("/v1/gov", PROPOSALS_BYTES_MAX)?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    println!("in force for height {} (tip {}), charter {}", v["next_height"], v["height"], s(&v["charter_hash"]));
    println!("validators (total power {})", v["total_power"]);
    for val in v["validators"].as_array().map(Vec::as_slice).unwrap_or_default() {
        println!("  {:<24} power {:<6} consensus {}", s(&val["name"]), val["power"], s(&val["consensus_key"]));
    }
    println!("agencies");
    for a in v["agencies"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let list =
            |k: &str| a[k].as_array().map_or(String::new(), |xs| xs.iter().map(s).collect::<Vec<_>>().join(", "));
        println!("  {:<24} namespaces {}", s(&a["name"]), list("namespaces"));
        println!("  {:<24} keys {}", "", list("submitter_keys"));
    }
    println!("open proposals {}", v["open_proposals"]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        gov: GovCommand,
    }

    fn hex(n: u8) -> String {
        SecretKey::from_seed([n; 32]).public().to_hex()
    }

    fn pk(n: u8) -> PublicKey {
        SecretKey::from_seed([n; 32]).public()
    }

    /// Parses `annal gov propose --node N --signer S <change…>` and returns the change.
    fn change(words: &[&str]) -> Result<Change> {
        let mut argv = vec!["gov", "propose", "--node", "http://n", "--signer", "v.key"];
        argv.extend_from_slice(words);
        match Cli::try_parse_from(argv).map_err(|e| anyhow!("{e}"))?.gov {
            GovCommand::Propose(p) => p.change.into_change(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_change_subcommand_becomes_its_ledger_change() {
        // Goal: each change subcommand parses into exactly the ledger Change it names, keys from hex.
        let (a, b) = (hex(1), hex(2));
        let cases: Vec<(Vec<&str>, Change)> = vec![
            (
                vec!["add-validator", "--name", "v5", "--consensus-key", &a, "--p2p-key", &b, "--power", "2"],
                Change::AddValidator(Validator { name: "v5".into(), consensus_key: pk(1), p2p_key: pk(2), power: 2 }),
            ),
            (vec!["remove-validator", "--name", "v5"], Change::RemoveValidator { name: "v5".into() }),
            (vec!["set-power", "--name", "v5", "--power", "3"], Change::SetPower { name: "v5".into(), power: 3 }),
            (
                vec![
                    "add-agency",
                    "--name",
                    "court",
                    "--key",
                    &a,
                    "--key",
                    &b,
                    "--namespace",
                    "c1",
                    "--namespace",
                    "c2",
                ],
                Change::AddAgency(Agency {
                    name: "court".into(),
                    submitter_keys: vec![pk(1), pk(2)],
                    namespaces: vec!["c1".into(), "c2".into()],
                }),
            ),
            (vec!["remove-agency", "--name", "court"], Change::RemoveAgency { name: "court".into() }),
            (
                vec!["grant-namespace", "--agency", "court", "--namespace", "c3"],
                Change::GrantNamespace { agency: "court".into(), namespace: "c3".into() },
            ),
            (
                vec!["withdraw-namespace", "--agency", "court", "--namespace", "c3"],
                Change::WithdrawNamespace { agency: "court".into(), namespace: "c3".into() },
            ),
            (vec!["add-key", "--agency", "court", "--key", &a], Change::AddKey { agency: "court".into(), key: pk(1) }),
            (
                vec!["rotate-key", "--agency", "court", "--old", &a, "--new", &b],
                Change::RotateKey { agency: "court".into(), old: pk(1), new: pk(2) },
            ),
            (
                vec!["revoke-key", "--agency", "court", "--key", &b],
                Change::RevokeKey { agency: "court".into(), key: pk(2) },
            ),
        ];
        for (words, want) in cases {
            assert_eq!(change(&words).unwrap_or_else(|e| panic!("{words:?}: {e}")), want, "{words:?}");
        }
    }

    #[test]
    fn bad_keys_and_missing_fields_are_usage_errors() {
        // Goal: a key that is not 64 hex characters, or an agency without a key or namespace, is refused by the parser.
        let err = change(&["add-key", "--agency", "court", "--key", "abcd"]).unwrap_err().to_string();
        assert!(err.contains("--key"), "{err}");
        assert!(change(&["add-agency", "--name", "court", "--namespace", "c1"]).is_err());
        assert!(change(&["add-agency", "--name", "court", "--key", &hex(1)]).is_err());
        assert!(change(&["set-power", "--name", "v1"]).is_err());
        assert!(change(&[]).is_err(), "a proposal names its change");
    }

    #[test]
    fn propose_and_approve_options_parse_with_their_defaults() {
        // Goal: --expires-in defaults to 1000 and must be at least 1; propose and approve wait unless --no-wait.
        let p = Cli::try_parse_from(["gov", "propose", "--node", "n", "--signer", "k", "remove-agency", "--name", "x"])
            .unwrap();
        let GovCommand::Propose(p) = p.gov else { unreachable!() };
        assert_eq!((p.expires_in, p.effective_height, p.signing.no_wait, p.signing.json), (1000, None, false, false));
        let argv = ["gov", "propose", "--node", "n", "--signer", "k", "--effective-height", "50", "--expires-in", "7"];
        let p =
            Cli::try_parse_from(argv.iter().chain(&["--no-wait", "--json", "remove-agency", "--name", "x"])).unwrap();
        let GovCommand::Propose(p) = p.gov else { unreachable!() };
        assert_eq!((p.expires_in, p.effective_height, p.signing.no_wait, p.signing.json), (7, Some(50), true, true));
        let zero =
            ["gov", "propose", "--node", "n", "--signer", "k", "--expires-in", "0", "remove-agency", "--name", "x"];
        assert!(Cli::try_parse_from(zero).is_err());
        let id = RecordId([7; 32]).to_hex();
        let a = Cli::try_parse_from(["gov", "approve", "--node", "n", "--signer", "k", &id]).unwrap();
        assert!(matches!(a.gov, GovCommand::Approve(ApproveArgs { ref id, .. }) if id.len() == 64));
        assert!(Cli::try_parse_from(["gov", "approve", "--node", "n", "--signer", "k"]).is_err());
    }

    #[test]
    fn set_params_reads_a_whole_params_object_and_nothing_else() {
        // Goal: set-params takes the genesis "params" object; an unknown or missing field is refused.
        let dir = std::env::temp_dir().join(format!("annal-cli-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        let params = Params { block_interval_ms: 250, ..Params::default() };
        std::fs::write(&good, serde_json::to_vec(&params).unwrap()).unwrap();
        let path = good.to_str().unwrap();
        assert_eq!(change(&["set-params", "--file", path]).unwrap(), Change::SetParams(params.clone()));
        let mut extra = serde_json::to_value(&params).unwrap();
        extra["colour"] = json!("blue");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, extra.to_string()).unwrap();
        let err = format!("{:#}", change(&["set-params", "--file", bad.to_str().unwrap()]).unwrap_err());
        assert!(err.contains("colour"), "{err}");
        let mut missing = serde_json::to_value(&params).unwrap();
        missing.as_object_mut().unwrap().remove("block_interval_ms");
        std::fs::write(&bad, missing.to_string()).unwrap();
        assert!(change(&["set-params", "--file", bad.to_str().unwrap()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn governance_records_have_the_keys_the_ledger_checks() {
        // Goal: a proposal's key is proposal/<16 hex of the proposer>-<nonce>, an approval's is the
        // ledger's approval_key, and both pass the ledger's own governance record check.
        let key = SecretKey::from_seed([1; 32]);
        let params = Params::default();
        let action = GovAction::Propose {
            change: Change::RemoveAgency { name: "land".into() },
            effective_height: None,
            expires_height: 10,
        };
        let draft = proposal_draft(&action, &key.public(), 42);
        assert_eq!(draft.key, format!("proposal/{}-42", &key.public().to_hex()[..16]));
        let signed = build_record("c", draft, None, key.public(), 42).unwrap().sign(&key);
        assert_eq!(signed.record.namespace, GOV_NAMESPACE);
        assert_eq!((signed.record.op, signed.record.version), (Op::Publish, 1));
        assert_eq!(GovAction::of_record(&signed.record.fields(), &params).unwrap(), action);
        let proposal = signed.id();
        let draft = approval_draft(proposal, &key.public());
        let signed = build_record("c", draft, None, key.public(), 43).unwrap().sign(&key);
        assert_eq!(signed.record.key, approval_key(&proposal, &key.public()));
        assert_eq!(GovAction::of_record(&signed.record.fields(), &params).unwrap(), GovAction::Approve { proposal });
    }

    #[test]
    fn quorum_is_more_than_two_thirds() {
        // Goal: the power shown as needed is the least that is strictly more than 2/3 of the total.
        assert_eq!(quorum_power(4), 3);
        assert_eq!(quorum_power(3), 3);
        assert_eq!(quorum_power(6), 5);
        assert_eq!(quorum_power(1), 1);
        assert_eq!(quorum_power(100), 67);
    }

    #[test]
    fn status_text_names_height_and_reason() {
        // Goal: list and show say where a proposal stands, with the height and a failure's reason.
        let mut p = ProposalView {
            id: "ab".into(),
            status: StatusView { name: "open".into(), height: None, reason: None },
            description: "d".into(),
            proposer: "k".into(),
            height: 1,
            effective_height: None,
            expires_height: 1001,
            approvals: vec![],
            approving_power: 1,
            total_power: 4,
        };
        assert_eq!(status_text(&p), "open (expires after height 1001)");
        assert_eq!(quorum_text(&p), "3 needed: 2 more");
        p.status = StatusView { name: "failed".into(), height: Some(9), reason: Some("no agency named \"x\"".into()) };
        assert_eq!(status_text(&p), "failed at height 9: no agency named \"x\"");
        p.status = StatusView { name: "scheduled".into(), height: Some(5), reason: None };
        p.approving_power = 3;
        assert_eq!(status_text(&p), "scheduled for height 5");
        assert_eq!(quorum_text(&p), "more than 2/3 of 4");
    }
}
