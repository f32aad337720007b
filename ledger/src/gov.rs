//! Governance: membership changes made through the ledger itself (ADR 0006).
//!
//! Validators propose and approve changes with records in the reserved
//! namespace [`GOV_NAMESPACE`], signed with their consensus keys. A record's
//! body is the canonical encoding of one [`GovAction`]:
//!
//! * `Propose { change, effective_height, expires_height }` under the key
//!   `proposal/<anything>`; the proposal's id is the record's id, and the
//!   proposer's signature counts as its first approval.
//! * `Approve { proposal }` under the key `approval/<proposal id>/<approver
//!   key>` (both hex), so a second approval by one validator is a `KeyExists`
//!   refusal like any other second Publish.
//!
//! [`Governance`] is the state these records drive, and every node computes
//! it alike while executing blocks (`exec`): the state after block `h` holds
//! the validator set and the [`Charter`] (agencies, namespaces, submitter keys,
//! parameters) in force at `h + 1`. When, at the end of block `h`, the
//! approvals of an open proposal carry more than 2/3 of the power of the set
//! in force, the proposal is scheduled for `max(effective_height, h + 2)`;
//! the block before that height applies it, so its header announces the next
//! set (`next_validators_hash`) and the next block's header names the new
//! charter (`charter_hash`). A proposal not approved by the end of block
//! `expires_height` expires.
//!
//! One height's changes together move at most 1/3 of the power of the set
//! before them (power removed, added, or changed); a change that would pass
//! the bound waits for the next height (ADR 0006: any quorum of the old set
//! then shares honest power with any quorum of the new). A change that no
//! longer applies when its height comes (its agency was removed meanwhile, a
//! key was taken) fails, and the failure is recorded on the proposal.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::block::ValidatorSet;
use crate::codec::{self, Canonical};
use crate::error::Error;
use crate::genesis::{Agency, Charter, Genesis, Params, Validator};
use crate::keys::{PublicKey, SecretKey};
use crate::record::{Body, Op, Record, RecordId, SignedRecord};
use crate::record_ref::{BodyRef, RecordRef};
use crate::state::Rules;

/// The namespace of governance records.
pub const GOV_NAMESPACE: &str = "annal.gov";
/// Key prefix of a proposal.
pub const PROPOSAL_PREFIX: &str = "proposal/";
/// Key prefix of an approval: `approval/<proposal id hex>/<approver key hex>`.
pub const APPROVAL_PREFIX: &str = "approval/";
/// The longest governance key (an approval's); genesis limits must allow it.
pub const GOV_KEY_BYTES_MAX: usize = APPROVAL_PREFIX.len() + 64 + 1 + 64;
/// Proposals open at once; a proposal past it is refused.
pub const OPEN_PROPOSALS_MAX: usize = 256;
/// How far ahead of its block a proposal may expire or take effect.
pub const HORIZON_HEIGHTS_MAX: u64 = 10_000_000;

/// One change to the chain's membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    AddValidator(Validator),
    RemoveValidator {
        name: String,
    },
    SetPower {
        name: String,
        power: u64,
    },
    AddAgency(Agency),
    RemoveAgency {
        name: String,
    },
    GrantNamespace {
        agency: String,
        namespace: String,
    },
    WithdrawNamespace {
        agency: String,
        namespace: String,
    },
    AddKey {
        agency: String,
        key: PublicKey,
    },
    /// Replaces `old` by `new`: `old` can no longer submit from the change's height.
    RotateKey {
        agency: String,
        old: PublicKey,
        new: PublicKey,
    },
    RevokeKey {
        agency: String,
        key: PublicKey,
    },
    SetParams(Params),
}

impl Change {
    /// Whether the change alters the validator set (and so waits for an epoch start).
    pub fn changes_set(&self) -> bool {
        matches!(self, Change::AddValidator(_) | Change::RemoveValidator { .. } | Change::SetPower { .. })
    }

    /// A one-line description for people.
    pub fn describe(&self) -> String {
        match self {
            Change::AddValidator(v) => format!("add validator {:?} with power {}", v.name, v.power),
            Change::RemoveValidator { name } => format!("remove validator {name:?}"),
            Change::SetPower { name, power } => format!("set the power of validator {name:?} to {power}"),
            Change::AddAgency(a) => format!(
                "add agency {:?} with {} key(s) and namespaces {:?}",
                a.name,
                a.submitter_keys.len(),
                a.namespaces
            ),
            Change::RemoveAgency { name } => format!("remove agency {name:?}"),
            Change::GrantNamespace { agency, namespace } => format!("grant {namespace:?} to agency {agency:?}"),
            Change::WithdrawNamespace { agency, namespace } => {
                format!("withdraw {namespace:?} from agency {agency:?}")
            }
            Change::AddKey { agency, key } => format!("add key {key} to agency {agency:?}"),
            Change::RotateKey { agency, old, new } => format!("rotate agency {agency:?}'s key {old} to {new}"),
            Change::RevokeKey { agency, key } => format!("revoke agency {agency:?}'s key {key}"),
            Change::SetParams(_) => "set the chain parameters".into(),
        }
    }
}

/// What a governance record asks.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum GovAction {
    Propose { change: Change, effective_height: Option<u64>, expires_height: u64 },
    Approve { proposal: RecordId },
}

impl Canonical for GovAction {
    const KIND: &'static str = "governance action";
}

impl GovAction {
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The governance record carrying this action: a Publish in [`GOV_NAMESPACE`]
    /// under `record_key` (a proposal's `proposal/…`, or [`approval_key`]), signed
    /// by `signer` with `nonce`.
    pub fn signed_record(&self, chain_id: &str, record_key: String, signer: &SecretKey, nonce: u64) -> SignedRecord {
        Record {
            chain_id: chain_id.to_string(),
            namespace: GOV_NAMESPACE.into(),
            key: record_key,
            op: Op::Publish,
            body: Body::Inline(self.to_bytes()),
            metadata: BTreeMap::new(),
            supersedes: None,
            version: 1,
            submitter: signer.public(),
            nonce,
        }
        .sign(signer)
    }

    /// The action a governance record carries, with its key checked against it.
    pub fn of_record(r: &RecordRef, params: &Params) -> Result<Self, Error> {
        let bad = |detail: String| Err(Error::Governance { detail });
        if r.op != Op::Publish {
            return bad(format!("a governance record is a Publish, not {}", r.op.name()));
        }
        let BodyRef::Inline(bytes) = r.body else {
            return bad("a governance record's body is an inline governance action, not a document".into());
        };
        let action: GovAction = codec::decode(bytes, params.body_bytes_max)?;
        match &action {
            GovAction::Propose { .. } if !r.key.starts_with(PROPOSAL_PREFIX) => {
                bad(format!("a proposal's key starts with {PROPOSAL_PREFIX:?}; got {:?}", r.key))
            }
            GovAction::Approve { proposal } if r.key != approval_key(proposal, &r.submitter) => {
                bad(format!("an approval's key is {:?}; got {:?}", approval_key(proposal, &r.submitter), r.key))
            }
            _ => Ok(action),
        }
    }
}

/// The key of `approver`'s approval of `proposal`.
pub fn approval_key(proposal: &RecordId, approver: &PublicKey) -> String {
    format!("{APPROVAL_PREFIX}{}/{}", proposal.to_hex(), approver.to_hex())
}

/// Where a proposal stands.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ProposalStatus {
    /// Waiting for approvals.
    Open,
    /// Approved; takes effect at `height`.
    Scheduled {
        height: u64,
    },
    Applied {
        height: u64,
    },
    /// Not approved by the end of block `height` (its `expires_height`).
    Expired {
        height: u64,
    },
    /// Approved, but no longer applicable when its height came.
    Failed {
        height: u64,
        reason: String,
    },
}

impl ProposalStatus {
    pub fn name(&self) -> &'static str {
        match self {
            ProposalStatus::Open => "open",
            ProposalStatus::Scheduled { .. } => "scheduled",
            ProposalStatus::Applied { .. } => "applied",
            ProposalStatus::Expired { .. } => "expired",
            ProposalStatus::Failed { .. } => "failed",
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self, ProposalStatus::Applied { .. } | ProposalStatus::Expired { .. } | ProposalStatus::Failed { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Proposal {
    pub id: RecordId,
    pub proposer: PublicKey,
    /// Height of the block that carried the proposal.
    pub height: u64,
    pub change: Change,
    pub effective_height: Option<u64>,
    pub expires_height: u64,
    /// Consensus keys of the validators that approved (the proposer first among them).
    pub approvals: BTreeSet<PublicKey>,
    pub status: ProposalStatus,
}

impl Canonical for Proposal {
    const KIND: &'static str = "proposal";
}

/// The largest stored proposal read.
pub const PROPOSAL_BYTES_MAX: usize = 1 << 20;

/// Governance state after a block: membership in force at the next height,
/// and the proposals not yet closed.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Governance {
    pub chain_id: String,
    /// The set that certifies the next block.
    pub validators: ValidatorSet,
    /// The charter the next block's records are checked under.
    pub charter: Charter,
    /// Open and scheduled proposals, by id.
    pub proposals: BTreeMap<RecordId, Proposal>,
}

impl Canonical for Governance {
    const KIND: &'static str = "governance";
}

/// The largest stored governance state read.
pub const GOVERNANCE_BYTES_MAX: usize = 64 << 20;

/// What one block did to governance (`exec` fills it, the store commits it).
#[derive(Clone, Debug)]
pub struct GovUpdate {
    /// The state after the block.
    pub state: Governance,
    /// Whether the state differs from the one before the block.
    pub changed: bool,
    /// Proposals whose status or approvals changed in the block, as they now stand.
    pub touched: Vec<Proposal>,
    /// The charter for the next height, when it differs from this block's.
    pub next_charter: Option<Charter>,
    /// The set for the next height, when it differs from this block's.
    pub next_set: Option<ValidatorSet>,
}

impl Governance {
    /// The state before the first block.
    pub fn genesis(genesis: &Genesis) -> Self {
        Governance {
            chain_id: genesis.chain_id.clone(),
            validators: genesis.validator_set(),
            charter: genesis.charter(),
            proposals: BTreeMap::new(),
        }
    }

    /// The rules the next block's records are checked under.
    pub fn rules(&self) -> Rules {
        Rules::of(&self.chain_id, &self.charter, &self.validators)
    }

    /// Power of the validators in force that approved `proposal`.
    pub fn approving_power(&self, proposal: &Proposal) -> u64 {
        self.validators
            .validators
            .iter()
            .filter(|v| proposal.approvals.contains(&v.consensus_key))
            .map(|v| v.power)
            .sum()
    }
}

/// Applies `change` to a membership and checks the result as genesis is
/// checked (names, keys, namespaces, powers). Returns the power it moved.
fn apply(chain_id: &str, set: &mut ValidatorSet, charter: &mut Charter, change: &Change) -> Result<u64, String> {
    let validator = |set: &mut ValidatorSet, name: &str| {
        set.validators.iter().position(|v| v.name == name).ok_or_else(|| format!("no validator named {name:?}"))
    };
    let agency = |charter: &mut Charter, name: &str| {
        charter.agencies.iter().position(|a| a.name == name).ok_or_else(|| format!("no agency named {name:?}"))
    };
    let moved = match change {
        Change::AddValidator(v) => {
            set.validators.push(v.clone());
            v.power
        }
        Change::RemoveValidator { name } => {
            let i = validator(set, name)?;
            set.validators.remove(i).power
        }
        Change::SetPower { name, power } => {
            let i = validator(set, name)?;
            let old = std::mem::replace(&mut set.validators[i].power, *power);
            old.abs_diff(*power)
        }
        Change::AddAgency(a) => {
            charter.agencies.push(a.clone());
            0
        }
        Change::RemoveAgency { name } => {
            let i = agency(charter, name)?;
            charter.agencies.remove(i);
            0
        }
        Change::GrantNamespace { agency: name, namespace } => {
            let i = agency(charter, name)?;
            charter.agencies[i].namespaces.push(namespace.clone());
            0
        }
        Change::WithdrawNamespace { agency: name, namespace } => {
            let i = agency(charter, name)?;
            let a = &mut charter.agencies[i];
            let at = a.namespaces.iter().position(|n| n == namespace);
            let at = at.ok_or_else(|| format!("agency {name:?} has no namespace {namespace:?}"))?;
            a.namespaces.remove(at);
            0
        }
        Change::AddKey { agency: name, key } => {
            let i = agency(charter, name)?;
            charter.agencies[i].submitter_keys.push(*key);
            0
        }
        Change::RotateKey { agency: name, old, new } => {
            let i = agency(charter, name)?;
            let a = &mut charter.agencies[i];
            let at = a.submitter_keys.iter().position(|k| k == old);
            let at = at.ok_or_else(|| format!("agency {name:?} has no key {old}"))?;
            a.submitter_keys[at] = *new;
            0
        }
        Change::RevokeKey { agency: name, key } => {
            let i = agency(charter, name)?;
            let a = &mut charter.agencies[i];
            let at = a.submitter_keys.iter().position(|k| k == key);
            let at = at.ok_or_else(|| format!("agency {name:?} has no key {key}"))?;
            a.submitter_keys.remove(at);
            0
        }
        Change::SetParams(p) => {
            charter.params = p.clone();
            0
        }
    };
    // The membership after the change must be one genesis could have started with.
    let as_genesis = Genesis {
        chain_id: chain_id.to_string(),
        genesis_time_ms: 0,
        validators: set.validators.clone(),
        agencies: charter.agencies.clone(),
        params: charter.params.clone(),
    };
    as_genesis.validate().map_err(|e| match e {
        Error::Genesis { detail } => format!("the membership after it would be invalid: {detail}"),
        other => other.to_string(),
    })?;
    Ok(moved)
}

/// True when moving `moved` power is within the 1/3 bound of a set of `total`.
fn within_third(moved: u64, total: u64) -> bool {
    3 * (moved as u128) <= total as u128
}

/// Governance during one block's execution.
pub struct BlockGov {
    height: u64,
    state: Governance,
    touched: BTreeSet<RecordId>,
    changed: bool,
}

impl BlockGov {
    pub fn new(state: &Governance, height: u64) -> Self {
        BlockGov { height, state: state.clone(), touched: BTreeSet::new(), changed: false }
    }

    /// Checks a governance record against the state so far in the block,
    /// without changing it; `accept` then takes it in.
    pub fn check(&self, r: &RecordRef) -> Result<GovAction, Error> {
        let bad = |detail: String| Err(Error::Governance { detail });
        let action = GovAction::of_record(r, &self.state.charter.params)?;
        match &action {
            GovAction::Propose { change, effective_height, expires_height } => {
                let h = self.height;
                if *expires_height < h || *expires_height > h + HORIZON_HEIGHTS_MAX {
                    return bad(format!(
                        "expires_height {expires_height} is not between this block's height {h} and {}",
                        h + HORIZON_HEIGHTS_MAX
                    ));
                }
                if effective_height.is_some_and(|e| e > h + HORIZON_HEIGHTS_MAX) {
                    return bad(format!("effective_height is more than {HORIZON_HEIGHTS_MAX} heights ahead"));
                }
                if self.state.proposals.len() >= OPEN_PROPOSALS_MAX {
                    return bad(format!("{OPEN_PROPOSALS_MAX} proposals are open; wait for some to close"));
                }
                if let Change::SetParams(p) = change {
                    let now = &self.state.charter.params;
                    if p.epoch_blocks != now.epoch_blocks || p.view_timeout_ms != now.view_timeout_ms {
                        return bad(format!(
                            "epoch_blocks ({}) and view_timeout_ms ({}) are fixed for the chain's life",
                            now.epoch_blocks, now.view_timeout_ms
                        ));
                    }
                    // Nodes size consensus messages from the genesis limits: these may fall, never rise.
                    let raised = [
                        ("record_bytes_max", p.record_bytes_max, now.record_bytes_max),
                        ("block_bytes_max", p.block_bytes_max, now.block_bytes_max),
                        ("block_records_max", p.block_records_max, now.block_records_max),
                    ];
                    if let Some((name, new, old)) = raised.iter().find(|(_, new, old)| new > old) {
                        return bad(format!(
                            "{name} may be lowered but not raised ({old} to {new}): nodes size consensus \
                             messages from it"
                        ));
                    }
                }
                let (mut set, mut charter) = (self.state.validators.clone(), self.state.charter.clone());
                let moved = apply(&self.state.chain_id, &mut set, &mut charter, change)
                    .map_err(|why| Error::Governance { detail: format!("{}: {why}", change.describe()) })?;
                let total = self.state.validators.total_power();
                if !within_third(moved, total) {
                    return bad(format!(
                        "{} moves {moved} of {total} voting power; one change may move at most a third \
                         (make it in several steps)",
                        change.describe()
                    ));
                }
            }
            GovAction::Approve { proposal } => match self.state.proposals.get(proposal) {
                None => return bad(format!("proposal {proposal} is not open (unknown, applied or expired)")),
                Some(p) if p.status != ProposalStatus::Open => {
                    return bad(format!("proposal {proposal} is {} already", p.status.name()))
                }
                Some(_) => {}
            },
        }
        Ok(action)
    }

    /// Takes in a governance record that `check` passed and that was appended.
    pub fn accept(&mut self, r: &RecordRef, id: RecordId, action: GovAction) {
        let approver = r.submitter;
        match action {
            GovAction::Propose { change, effective_height, expires_height } => {
                let proposal = Proposal {
                    id,
                    proposer: approver,
                    height: self.height,
                    change,
                    effective_height,
                    expires_height,
                    approvals: BTreeSet::from([approver]),
                    status: ProposalStatus::Open,
                };
                self.state.proposals.insert(id, proposal);
                self.touched.insert(id);
            }
            GovAction::Approve { proposal } => {
                let p = self.state.proposals.get_mut(&proposal).expect("check found it open");
                p.approvals.insert(approver);
                self.touched.insert(proposal);
            }
        }
        self.changed = true;
    }

    /// Ends the block: schedules approved proposals, expires stale ones, and
    /// applies the changes due at the next height.
    pub fn finish(mut self) -> GovUpdate {
        let h = self.height;
        let ids: Vec<RecordId> = self.state.proposals.keys().copied().collect();
        for id in &ids {
            let p = &self.state.proposals[id];
            if p.status != ProposalStatus::Open {
                continue;
            }
            let status = if self.state.validators.is_quorum(self.state.approving_power(p)) {
                let at = p.effective_height.unwrap_or(0).max(h + 2);
                // The validator set changes only where a consensus epoch starts (the node hands over there).
                let at = if p.change.changes_set() { self.state.charter.params.epoch_start_from(at) } else { at };
                ProposalStatus::Scheduled { height: at }
            } else if h >= p.expires_height {
                ProposalStatus::Expired { height: h }
            } else {
                continue;
            };
            self.state.proposals.get_mut(id).expect("listed").status = status;
            self.touched.insert(*id);
            self.changed = true;
        }
        // The changes due at h + 1, in id order, within the third bound of the set at h.
        let total = self.state.validators.total_power();
        let (mut set, mut charter) = (self.state.validators.clone(), self.state.charter.clone());
        let mut moved_total = 0u64;
        for id in &ids {
            let p = &self.state.proposals[id];
            if p.status != (ProposalStatus::Scheduled { height: h + 1 }) {
                continue;
            }
            let (mut s, mut c) = (set.clone(), charter.clone());
            let status = match apply(&self.state.chain_id, &mut s, &mut c, &p.change) {
                Ok(moved) if within_third(moved_total + moved, total) => {
                    moved_total += moved;
                    (set, charter) = (s, c);
                    ProposalStatus::Applied { height: h + 1 }
                }
                // Too much power moves at h + 1 already: the next epoch takes it.
                Ok(_) => ProposalStatus::Scheduled { height: self.state.charter.params.epoch_start_from(h + 2) },
                Err(reason) => ProposalStatus::Failed { height: h + 1, reason },
            };
            self.state.proposals.get_mut(id).expect("listed").status = status;
            self.touched.insert(*id);
            self.changed = true;
        }
        let next_charter = (charter != self.state.charter).then(|| charter.clone());
        let next_set = (set != self.state.validators).then(|| set.clone());
        self.state.validators = set;
        self.state.charter = charter;
        let touched: Vec<Proposal> =
            self.touched.iter().filter_map(|id| self.state.proposals.get(id)).cloned().collect();
        self.state.proposals.retain(|_, p| !p.status.is_closed());
        GovUpdate { state: self.state, changed: self.changed, touched, next_charter, next_set }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn genesis(powers: &[u64]) -> (Genesis, Vec<SecretKey>) {
        let keys: Vec<SecretKey> = (0..powers.len()).map(|i| SecretKey::from_seed([i as u8 + 1; 32])).collect();
        let validators = powers
            .iter()
            .enumerate()
            .map(|(i, &power)| Validator {
                name: format!("v{i}"),
                consensus_key: keys[i].public(),
                p2p_key: SecretKey::from_seed([i as u8 + 100; 32]).public(),
                power,
            })
            .collect();
        let agencies = vec![Agency {
            name: "land".into(),
            submitter_keys: vec![SecretKey::from_seed([200; 32]).public()],
            namespaces: vec!["land.titles".into()],
        }];
        let g = Genesis {
            chain_id: "gov-test".into(),
            genesis_time_ms: 0,
            validators,
            agencies,
            // One height per epoch: set changes take effect as soon as other changes do.
            params: Params { epoch_blocks: 1, ..Params::default() },
        };
        g.validate().unwrap();
        (g, keys)
    }

    fn gov_record(key: &SecretKey, nonce: u64, record_key: String, action: &GovAction) -> SignedRecord {
        action.signed_record("gov-test", record_key, key, nonce)
    }

    fn propose(key: &SecretKey, change: Change, expires_height: u64) -> SignedRecord {
        let action = GovAction::Propose { change, effective_height: None, expires_height };
        gov_record(key, 1, "proposal/1".into(), &action)
    }

    fn approve(key: &SecretKey, nonce: u64, proposal: RecordId) -> SignedRecord {
        gov_record(key, nonce, approval_key(&proposal, &key.public()), &GovAction::Approve { proposal })
    }

    /// Governance before the first block.
    fn start(g: &Genesis) -> Governance {
        Governance::genesis(g)
    }

    /// Runs one block of governance records through check and accept.
    fn block(state: &Governance, height: u64, records: &[SignedRecord]) -> GovUpdate {
        let mut gov = BlockGov::new(state, height);
        for r in records {
            let action = gov.check(&r.record.fields()).unwrap();
            gov.accept(&r.record.fields(), r.id(), action);
        }
        gov.finish()
    }

    #[test]
    fn a_change_applies_two_heights_after_the_block_that_approved_it() {
        // Goal: approvals past 2/3 at block h schedule the change for h + 2; block h + 1 applies
        // it (its state holds the set in force at h + 2); less than a quorum never applies.
        let (g, keys) = genesis(&[1, 1, 1, 1]);
        let new = Validator {
            name: "v4".into(),
            consensus_key: SecretKey::from_seed([9; 32]).public(),
            p2p_key: SecretKey::from_seed([109; 32]).public(),
            power: 1,
        };
        let p = propose(&keys[0], Change::AddValidator(new.clone()), 100);
        let s1 = block(&start(&g), 1, std::slice::from_ref(&p));
        assert_eq!(s1.state.proposals[&p.id()].status, ProposalStatus::Open);
        let s2 = block(&s1.state, 2, &[approve(&keys[1], 1, p.id())]);
        assert_eq!(s2.state.proposals[&p.id()].status, ProposalStatus::Open, "2 of 4 is no quorum");
        let s3 = block(&s2.state, 3, &[approve(&keys[2], 1, p.id())]);
        assert_eq!(s3.state.proposals[&p.id()].status, ProposalStatus::Scheduled { height: 5 });
        assert_eq!(s3.state.validators.validators.len(), 4);
        let s4 = block(&s3.state, 4, &[]);
        assert_eq!(s4.state.validators.validators.len(), 5, "block 4 hands over to the set of height 5");
        assert_eq!(s4.state.validators.validators[4], new);
        assert!(s4.state.proposals.is_empty());
        assert_eq!(s4.touched[0].status, ProposalStatus::Applied { height: 5 });
        assert!(s4.next_charter.is_none());
    }

    #[test]
    fn proposals_expire_and_refuse_late_approvals_and_strangers() {
        let (g, keys) = genesis(&[1, 1, 1, 1]);
        let key = SecretKey::from_seed([77; 32]).public();
        let p = propose(&keys[0], Change::AddKey { agency: "land".into(), key }, 2);
        let s1 = block(&start(&g), 1, std::slice::from_ref(&p));
        let s2 = block(&s1.state, 2, &[approve(&keys[1], 1, p.id())]);
        assert_eq!(s2.touched[0].status, ProposalStatus::Expired { height: 2 });
        assert!(s2.state.proposals.is_empty());
        let late = approve(&keys[2], 1, p.id());
        let err = BlockGov::new(&s2.state, 3).check(&late.record.fields()).unwrap_err().to_string();
        assert!(err.contains("not open"), "{err}");
        // An approval under someone else's key path is refused by its key.
        let mut wrong = approve(&keys[2], 1, p.id());
        wrong.record.key = approval_key(&p.id(), &keys[3].public());
        let wrong = wrong.record.sign(&keys[2]);
        assert!(GovAction::of_record(&wrong.record.fields(), &g.params)
            .unwrap_err()
            .to_string()
            .contains("approval's key"));
    }

    #[test]
    fn a_change_moving_more_than_a_third_of_the_power_is_refused() {
        let (g, keys) = genesis(&[1, 1, 1, 1]);
        let gov = BlockGov::new(&start(&g), 1);
        let err = gov
            .check(&propose(&keys[0], Change::SetPower { name: "v0".into(), power: 3 }, 9).record.fields())
            .unwrap_err();
        assert!(err.to_string().contains("at most a third"), "{err}");
        gov.check(&propose(&keys[0], Change::SetPower { name: "v0".into(), power: 2 }, 9).record.fields()).unwrap();
        let err = gov
            .check(&propose(&keys[0], Change::RemoveValidator { name: "v9".into() }, 9).record.fields())
            .unwrap_err();
        assert!(err.to_string().contains("no validator named"), "{err}");
        let mut params = g.params.clone();
        params.epoch_blocks += 1;
        let err = gov.check(&propose(&keys[0], Change::SetParams(params), 9).record.fields()).unwrap_err();
        assert!(err.to_string().contains("fixed for the chain's life"), "{err}");
        let mut params = g.params.clone();
        params.block_bytes_max += 1;
        let err = gov.check(&propose(&keys[0], Change::SetParams(params.clone()), 9).record.fields()).unwrap_err();
        assert!(err.to_string().contains("not raised"), "{err}");
        params.block_bytes_max -= 2;
        gov.check(&propose(&keys[0], Change::SetParams(params), 9).record.fields()).unwrap();
    }

    #[test]
    fn two_changes_due_at_one_height_stay_within_a_third_together() {
        // Goal: power-moving changes scheduled for one height that together pass 1/3 are spread over heights.
        let (g, keys) = genesis(&[1, 1, 1, 1, 1, 1]);
        let a = propose(&keys[0], Change::RemoveValidator { name: "v5".into() }, 50);
        let mut b = propose(&keys[1], Change::RemoveValidator { name: "v4".into() }, 50);
        b.record.nonce = 2;
        let b = b.record.sign(&keys[1]);
        let mut c = propose(&keys[2], Change::SetPower { name: "v3".into(), power: 2 }, 50);
        c.record.key = "proposal/c".into();
        let c = c.record.sign(&keys[2]);
        let s1 = block(&start(&g), 1, &[a.clone(), b.clone(), c.clone()]);
        let mut approvals = Vec::new();
        for (n, k) in keys.iter().enumerate().take(5) {
            for p in [&a, &b, &c] {
                if !s1.state.proposals[&p.id()].approvals.contains(&k.public()) {
                    approvals.push(approve(k, 10 + n as u64 * 3 + approvals.len() as u64, p.id()));
                }
            }
        }
        let s2 = block(&s1.state, 2, &approvals);
        let s3 = block(&s2.state, 3, &[]);
        let s4 = block(&s3.state, 4, &[]);
        let applied_at =
            |u: &GovUpdate| u.touched.iter().filter(|p| matches!(p.status, ProposalStatus::Applied { .. })).count();
        assert_eq!(applied_at(&s3), 2, "two units of 6 move at height 4");
        assert_eq!(applied_at(&s4), 1, "the third waits for height 5");
        assert_eq!(s4.state.validators.validators.len(), 4);
    }

    #[test]
    fn a_change_that_no_longer_applies_fails_with_its_reason() {
        // Goal: two approved proposals that each were valid alone but conflict: the first (by id)
        // applies, the second fails at its height and says why.
        let (g, keys) = genesis(&[1, 1, 1, 1]);
        let court = |ns: &str| Agency {
            name: "court".into(),
            submitter_keys: vec![SecretKey::from_seed([ns.len() as u8 + 50; 32]).public()],
            namespaces: vec![ns.into()],
        };
        let a = propose(&keys[0], Change::AddAgency(court("court.notices")), 50);
        let b = propose(&keys[1], Change::AddAgency(court("court.orders.x")), 50);
        let s1 = block(&start(&g), 1, &[a.clone(), b.clone()]);
        let mut approvals = Vec::new();
        for k in &keys {
            for p in [&a, &b] {
                if !s1.state.proposals[&p.id()].approvals.contains(&k.public()) {
                    approvals.push(approve(k, 10 + approvals.len() as u64, p.id()));
                }
            }
        }
        let s2 = block(&s1.state, 2, &approvals);
        let s3 = block(&s2.state, 3, &[]);
        assert_eq!(s3.state.charter.agencies.len(), 2);
        assert_eq!(s3.next_charter.as_ref(), Some(&s3.state.charter));
        let failed: Vec<_> = s3.touched.iter().filter(|p| matches!(p.status, ProposalStatus::Failed { .. })).collect();
        assert_eq!(failed.len(), 1, "{:?}", s3.touched);
        let ProposalStatus::Failed { reason, .. } = &failed[0].status else { unreachable!() };
        assert!(reason.contains("duplicate agency name"), "{reason}");
    }
}
