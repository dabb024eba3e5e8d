//! The edge between the agent's domain types and the generated `evident.v1` types.

use evident_proto::v1;

use crate::checks::inventory::InventoryFacts;
use crate::checks::{CheckKind, Observation, Outcome};

pub fn evidence_item(sequence: u64, observation: &Observation) -> v1::EvidenceItem {
    let outcome = match &observation.outcome {
        Outcome::Inventory(facts) => v1::evidence_item::Outcome::Inventory(inventory(facts)),
        Outcome::Error(error) => v1::evidence_item::Outcome::Error(v1::CheckError {
            reason: error.reason.clone(),
            source: error.source.clone().unwrap_or_default(),
        }),
    };
    v1::EvidenceItem {
        sequence,
        check: check_kind(observation.check) as i32,
        observed_at_unix_ms: observation.observed_at_unix_ms,
        outcome: Some(outcome),
    }
}

fn check_kind(kind: CheckKind) -> v1::CheckKind {
    match kind {
        CheckKind::Inventory => v1::CheckKind::Inventory,
    }
}

fn inventory(f: &InventoryFacts) -> v1::InventoryFacts {
    v1::InventoryFacts {
        hostname: f.hostname.clone(),
        os_family: f.os_family.as_str().to_owned(),
        os_name: f.os_name.clone(),
        os_version: f.os_version.clone(),
        os_build: f.os_build.clone(),
        kernel_version: f.kernel_version.clone(),
        architecture: f.architecture.clone(),
        machine_id: f.machine_id.clone(),
        hardware_vendor: f.hardware_vendor.clone(),
        hardware_model: f.hardware_model.clone(),
        hardware_serial: f.hardware_serial.clone(),
        boot_time_unix_ms: f.boot_time_unix_ms,
        agent_version: f.agent_version.clone(),
        unreadable: f
            .unreadable
            .iter()
            .map(|u| v1::UnreadableFact {
                fact: u.fact.clone(),
                reason: u.reason.clone(),
            })
            .collect(),
    }
}

/// What the agent tells the collector about its host at enrolment.
pub fn host_facts(facts: Option<&InventoryFacts>) -> v1::HostFacts {
    let Some(f) = facts else {
        return v1::HostFacts {
            os_family: crate::host::OsFamily::current().as_str().to_owned(),
            ..v1::HostFacts::default()
        };
    };
    v1::HostFacts {
        hostname: f.hostname.clone().unwrap_or_default(),
        os_family: f.os_family.as_str().to_owned(),
        os_name: f.os_name.clone().unwrap_or_default(),
        os_version: f.os_version.clone().unwrap_or_default(),
        architecture: f.architecture.clone().unwrap_or_default(),
        machine_id: f.machine_id.clone().unwrap_or_default(),
    }
}
