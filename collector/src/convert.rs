//! The edge between the generated `evident.v1` types and the collector's domain types.

use evident_proto::v1;
use prost::Message;

use crate::model::{CheckKind, EvidenceItem, HostFacts, InventoryFacts, Outcome, UnreadableFact};

/// An `ItemList` read with each item kept as raw bytes. On the wire a repeated message field and a
/// repeated bytes field with the same number are identical, so this yields exactly the bytes the
/// agent signed for each item, whatever fields this collector version knows.
#[derive(Clone, PartialEq, prost::Message)]
struct RawItemList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    items: Vec<Vec<u8>>,
}

/// Why bytes from an agent could not be read as evidence.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("batch items are not a valid encoded ItemList: {0}")]
    ItemList(String),
    #[error("item {index} of the batch is not a valid EvidenceItem: {reason}")]
    Item { index: usize, reason: String },
    #[error(
        "item with sequence {sequence} has check kind {kind}, which this collector does not know"
    )]
    UnknownCheck { sequence: u64, kind: i32 },
    #[error("item with sequence {sequence} has no outcome: it needs facts or an error")]
    NoOutcome { sequence: u64 },
    #[error("item with sequence {sequence} is a {check} item but carries {payload} facts")]
    PayloadMismatch {
        sequence: u64,
        check: &'static str,
        payload: &'static str,
    },
}

/// Splits an encoded `ItemList` into the exact bytes of each item.
pub fn split_item_list(bytes: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    RawItemList::decode(bytes)
        .map(|list| list.items)
        .map_err(|e| DecodeError::ItemList(e.to_string()))
}

/// Decodes one item's bytes into the domain type, checking that kind and payload agree.
pub fn decode_item(index: usize, bytes: &[u8]) -> Result<EvidenceItem, DecodeError> {
    let item = v1::EvidenceItem::decode(bytes).map_err(|e| DecodeError::Item {
        index,
        reason: e.to_string(),
    })?;
    let sequence = item.sequence;
    let check = CheckKind::from_number(i64::from(item.check)).ok_or(DecodeError::UnknownCheck {
        sequence,
        kind: item.check,
    })?;
    let outcome = match item.outcome {
        None => return Err(DecodeError::NoOutcome { sequence }),
        Some(v1::evidence_item::Outcome::Error(e)) => Outcome::Error {
            reason: e.reason,
            source: e.source,
        },
        Some(v1::evidence_item::Outcome::Inventory(facts)) => {
            if check != CheckKind::Inventory {
                return Err(DecodeError::PayloadMismatch {
                    sequence,
                    check: check.as_str(),
                    payload: "inventory",
                });
            }
            Outcome::Inventory(inventory(facts))
        }
    };
    Ok(EvidenceItem {
        sequence,
        check,
        observed_at_unix_ms: item.observed_at_unix_ms,
        outcome,
    })
}

fn inventory(f: v1::InventoryFacts) -> InventoryFacts {
    InventoryFacts {
        hostname: f.hostname,
        os_family: f.os_family,
        os_name: f.os_name,
        os_version: f.os_version,
        os_build: f.os_build,
        kernel_version: f.kernel_version,
        architecture: f.architecture,
        machine_id: f.machine_id,
        hardware_vendor: f.hardware_vendor,
        hardware_model: f.hardware_model,
        hardware_serial: f.hardware_serial,
        boot_time_unix_ms: f.boot_time_unix_ms,
        agent_version: f.agent_version,
        unreadable: f
            .unreadable
            .into_iter()
            .map(|u| UnreadableFact {
                fact: u.fact,
                reason: u.reason,
            })
            .collect(),
    }
}

pub fn host_facts(host: Option<v1::HostFacts>, agent_version: String) -> HostFacts {
    let host = host.unwrap_or_default();
    HostFacts {
        hostname: host.hostname,
        os_family: host.os_family,
        os_name: host.os_name,
        os_version: host.os_version,
        architecture: host.architecture,
        machine_id: host.machine_id,
        agent_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sequence: u64, check: v1::CheckKind, outcome: v1::evidence_item::Outcome) -> Vec<u8> {
        v1::EvidenceItem {
            sequence,
            check: check as i32,
            observed_at_unix_ms: 1_700_000_000_000,
            outcome: Some(outcome),
        }
        .encode_to_vec()
    }

    #[test]
    fn split_returns_exact_item_bytes() {
        let a = item(
            1,
            v1::CheckKind::Inventory,
            v1::evidence_item::Outcome::Inventory(v1::InventoryFacts {
                hostname: Some("web-1".into()),
                ..Default::default()
            }),
        );
        let b = item(
            2,
            v1::CheckKind::Patch,
            v1::evidence_item::Outcome::Error(v1::CheckError {
                reason: "program apt not found".into(),
                source: "apt".into(),
            }),
        );
        let list = v1::ItemList {
            items: vec![
                v1::EvidenceItem::decode(a.as_slice()).expect("decode a"),
                v1::EvidenceItem::decode(b.as_slice()).expect("decode b"),
            ],
        }
        .encode_to_vec();
        assert_eq!(split_item_list(&list), Ok(vec![a.clone(), b.clone()]));
        let decoded = decode_item(1, &b).expect("decode");
        assert_eq!(decoded.check, CheckKind::Patch);
        assert!(matches!(decoded.outcome, Outcome::Error { .. }));
    }

    #[test]
    fn bad_items_are_named() {
        assert!(matches!(
            split_item_list(&[0x0a, 0x05, 0x01]),
            Err(DecodeError::ItemList(_))
        ));
        let unknown = v1::EvidenceItem {
            sequence: 7,
            check: 99,
            observed_at_unix_ms: 1,
            outcome: None,
        }
        .encode_to_vec();
        assert_eq!(
            decode_item(0, &unknown),
            Err(DecodeError::UnknownCheck {
                sequence: 7,
                kind: 99
            })
        );
        let mismatch = item(
            3,
            v1::CheckKind::Backup,
            v1::evidence_item::Outcome::Inventory(v1::InventoryFacts::default()),
        );
        assert!(matches!(
            decode_item(0, &mismatch),
            Err(DecodeError::PayloadMismatch { sequence: 3, .. })
        ));
    }
}
