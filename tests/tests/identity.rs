//! Identity comes from the verified client certificate, never from a message.

use evident_agent::state::{Credentials, StateDir};
use evident_agent::tls::{self, CollectorUrl};
use evident_proto::v1;
use evident_tests::{Agent, Collector};
use prost::Message;
use rcgen::KeyPair;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

fn credentials(agent: &Agent) -> Credentials {
    StateDir::new(&agent.state_dir)
        .credentials()
        .expect("credentials")
}

fn collector_ca(collector: &Collector) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(collector.data_dir.join("tls/ca.pem")).expect("ca.pem")
}

/// Opens a Report stream with the given TLS setup, sends one batch and returns the first answer.
async fn report_once(
    url: &str,
    tls_config: rustls::ClientConfig,
    request: impl Message + Default + 'static,
) -> Result<v1::Ack, String> {
    let channel = tls::connect(&CollectorUrl::parse(url).expect("url"), tls_config)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let codec = tonic_prost::ProstCodec::<_, v1::ReportResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/evident.v1.Evidence/Report");
    let mut stream = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![request])),
            path,
            codec,
        )
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    match stream.message().await {
        Ok(Some(v1::ReportResponse {
            kind: Some(v1::report_response::Kind::Ack(ack)),
        })) => Ok(ack),
        Ok(other) => Err(format!("no ack: {other:?}")),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

fn mutual(creds: &Credentials, ca: CertificateDer<'static>) -> rustls::ClientConfig {
    tls::mutual_config(ca, creds.cert.clone(), creds.key_der().expect("key")).expect("tls")
}

/// A Batch with an extra field 15 naming an agent: the collector must ignore any such claim.
#[derive(Clone, PartialEq, prost::Message)]
struct ForgedBatch {
    #[prost(uint64, tag = "1")]
    batch_id: u64,
    #[prost(bytes = "vec", tag = "2")]
    items: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
    #[prost(int32, tag = "4")]
    signature_algorithm: i32,
    #[prost(string, tag = "15")]
    agent_id: String,
}

/// ReportRequest's `batch` (oneof field 1) is wire-identical to this optional field.
#[derive(Clone, PartialEq, prost::Message)]
struct ForgedReportRequest {
    #[prost(message, optional, tag = "1")]
    batch: Option<ForgedBatch>,
}

/// An ItemList of one inventory item claiming `hostname`, with `claimed_agent` appended to the
/// item as an unknown field 15.
fn forged_items(sequence: u64, hostname: &str, claimed_agent: &str) -> Vec<u8> {
    let mut item = v1::EvidenceItem {
        sequence,
        check: v1::CheckKind::Inventory as i32,
        observed_at_unix_ms: 1_700_000_000_000,
        outcome: Some(v1::evidence_item::Outcome::Inventory(v1::InventoryFacts {
            hostname: Some(hostname.to_owned()),
            os_family: "linux".into(),
            agent_version: "forged".into(),
            ..Default::default()
        })),
    }
    .encode_to_vec();
    prost::encoding::string::encode(15, &claimed_agent.to_owned(), &mut item);
    let mut list = Vec::new();
    prost::encoding::bytes::encode(1, &item, &mut list);
    list
}

fn signed(
    key_pem: &str,
    batch_id: u64,
    items: Vec<u8>,
    claimed_agent: &str,
) -> ForgedReportRequest {
    let key = KeyPair::from_pem(key_pem).expect("key");
    ForgedReportRequest {
        batch: Some(ForgedBatch {
            batch_id,
            signature: evident_agent::report::sign_batch(&key, &items).expect("sign"),
            items,
            signature_algorithm: v1::SignatureAlgorithm::EcdsaP256Sha256 as i32,
            agent_id: claimed_agent.to_owned(),
        }),
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_or_none_at_all_cannot_report() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ours = Collector::start(&tmp.path().join("ours"));
    let theirs = Collector::start(&tmp.path().join("theirs"));
    let stranger = Agent::new(&tmp.path().join("stranger"));
    stranger.enroll_with(&theirs);
    let creds = credentials(&stranger);

    // A real agent certificate, but issued by another collector's CA.
    let foreign = report_once(
        &ours.url(),
        mutual(&creds, collector_ca(&ours)),
        signed(&creds.key_pem, 1, forged_items(1, "intruder", ""), ""),
    )
    .await;
    assert!(foreign.is_err(), "{foreign:?}");
    // The collector logs the refusal from its own thread, possibly just after the client saw it.
    evident_tests::wait_for_some(10, "the collector to log the refused handshake", || {
        ours.log().contains("TLS handshake failed").then_some(())
    });

    // No certificate: TLS lets the client in (it might be enrolling) but Report refuses it.
    let pin = tls::sha256(collector_ca(&ours).as_ref());
    let (anonymous_tls, _) = tls::enrollment_config(pin).expect("tls");
    let anonymous = report_once(
        &ours.url(),
        anonymous_tls,
        signed(&creds.key_pem, 1, forged_items(1, "anonymous", ""), ""),
    )
    .await;
    let error = anonymous.expect_err("refused");
    assert!(
        error.contains("Unauthenticated") && error.contains("client certificate is required"),
        "{error}"
    );

    assert!(ours.evidence(None).is_empty(), "nothing was stored");
    // The collector still serves a legitimate agent afterwards.
    let friend = Agent::new(&tmp.path().join("friend"));
    friend.enroll_with(&ours);
    friend.run_once().expect_ok("legitimate agent");
    assert_eq!(ours.evidence(None).len(), evident_tests::ITEMS_PER_CYCLE);
}

#[tokio::test]
async fn no_message_field_can_store_evidence_under_another_agents_id() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let victim = Agent::new(&tmp.path().join("victim"));
    let victim_id = victim.enroll_with(&collector);
    victim.run_once().expect_ok("victim reports");
    let before = collector.evidence(Some(&victim_id));

    let attacker = Agent::new(&tmp.path().join("attacker"));
    let attacker_id = attacker.enroll_with(&collector);
    let creds = credentials(&attacker);
    let ca = collector_ca(&collector);

    // The attacker claims the victim's id in the batch and in the item, and reuses the victim's
    // sequence number: the evidence lands under the attacker's own id.
    let ack = report_once(
        &collector.url(),
        mutual(&creds, ca.clone()),
        signed(
            &creds.key_pem,
            1,
            forged_items(1, "forged-host", &victim_id),
            &victim_id,
        ),
    )
    .await
    .expect("the collector accepts the batch for the attacker itself");
    assert_eq!((ack.stored, ack.duplicates), (1, 0));
    assert_eq!(collector.evidence(Some(&victim_id)).len(), before.len());
    assert_eq!(
        collector.evidence(Some(&victim_id))[0]["item"],
        before[0]["item"],
        "the victim's evidence is untouched"
    );
    let attackers = collector.evidence(Some(&attacker_id));
    assert_eq!(attackers.len(), 1);
    assert_eq!(
        attackers[0]["item"]["outcome"]["inventory"]["hostname"],
        "forged-host"
    );

    // A batch signed with someone else's key is refused, whoever the connection belongs to.
    let victim_key = credentials(&victim).key_pem;
    let refused = report_once(
        &collector.url(),
        mutual(&creds, ca),
        signed(&victim_key, 2, forged_items(2, "forged-again", ""), ""),
    )
    .await;
    let error = refused.expect_err("foreign signature");
    assert!(error.contains("signature does not match"), "{error}");
    assert_eq!(collector.evidence(Some(&attacker_id)).len(), 1);
    collector
        .admin(&["verify"])
        .expect_ok("verify after the attempts");
}

#[tokio::test]
async fn a_malformed_batch_is_refused_with_the_reason_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    agent.enroll_with(&collector);
    agent.run_once().expect_ok("first report");
    let creds = credentials(&agent);
    let ca = collector_ca(&collector);

    let garbage = vec![0x0a, 0x7f, 0x01, 0x02];
    let refused = report_once(
        &collector.url(),
        mutual(&creds, ca.clone()),
        signed(&creds.key_pem, 7, garbage, ""),
    )
    .await;
    let error = refused.expect_err("garbage");
    assert!(
        error.contains("InvalidArgument") && error.contains("not a valid encoded ItemList"),
        "{error}"
    );

    let backwards = report_once(
        &collector.url(),
        mutual(&creds, ca),
        signed(&creds.key_pem, 1, forged_items(1, "changed", ""), ""),
    )
    .await;
    let error = backwards.expect_err("reused sequence with new content");
    assert!(
        error.contains("already stored with different content"),
        "{error}"
    );

    agent.run_once().expect_ok("the collector still serves");
    assert_eq!(
        collector.evidence(None).len(),
        2 * evident_tests::ITEMS_PER_CYCLE
    );
    collector.admin(&["verify"]).expect_ok("verify");
}

/// Opens a Report stream as `agent` and keeps it open: batches go in through the sender,
/// answers come out of the stream.
async fn open_stream(
    collector: &Collector,
    agent: &Agent,
) -> (
    tokio::sync::mpsc::Sender<ForgedReportRequest>,
    tonic::Streaming<v1::ReportResponse>,
) {
    let channel = tls::connect(
        &CollectorUrl::parse(&collector.url()).expect("url"),
        mutual(&credentials(agent), collector_ca(collector)),
    )
    .await
    .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (requests, receiver) = tokio::sync::mpsc::channel::<ForgedReportRequest>(4);
    let codec = tonic_prost::ProstCodec::<_, v1::ReportResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/evident.v1.Evidence/Report");
    let responses = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver)),
            path,
            codec,
        )
        .await
        .expect("stream opens")
        .into_inner();
    (requests, responses)
}

#[tokio::test]
async fn a_revocation_refuses_the_next_batch_of_a_stream_already_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let creds = credentials(&agent);
    let (requests, mut responses) = open_stream(&collector, &agent).await;

    requests
        .send(signed(&creds.key_pem, 1, forged_items(1, "host-1", ""), ""))
        .await
        .expect("send");
    let first = responses.message().await.expect("first answer");
    assert!(
        matches!(
            first,
            Some(v1::ReportResponse {
                kind: Some(v1::report_response::Kind::Ack(_))
            })
        ),
        "{first:?}"
    );

    collector
        .admin(&[
            "agent",
            "revoke",
            &agent_id,
            "--reason",
            "revoked mid-stream",
        ])
        .expect_ok("revoke");
    requests
        .send(signed(&creds.key_pem, 2, forged_items(2, "host-1", ""), ""))
        .await
        .expect("send");
    let refused = responses
        .message()
        .await
        .expect_err("the next batch is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("is revoked"), "{refused:?}");
    assert_eq!(collector.evidence(Some(&agent_id)).len(), 1);
}

#[tokio::test]
async fn a_jump_in_sequence_is_refused_unless_a_gap_record_accounts_for_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&tmp.path().join("collector"));
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let creds = credentials(&agent);
    let ca = collector_ca(&collector);

    let jump = report_once(
        &collector.url(),
        mutual(&creds, ca.clone()),
        signed(&creds.key_pem, 5, forged_items(5, "host", ""), ""),
    )
    .await
    .expect_err("a silent hole is refused");
    assert!(
        jump.contains("FailedPrecondition") && jump.contains("sequences 1..=4 are missing"),
        "{jump}"
    );

    let gap = v1::EvidenceItem {
        sequence: 4,
        check: v1::CheckKind::Gap as i32,
        observed_at_unix_ms: 1_700_000_000_000,
        outcome: Some(v1::evidence_item::Outcome::Gap(v1::Gap {
            from_sequence: 1,
            to_sequence: 4,
            items_dropped: 4,
            first_observed_at_unix_ms: None,
            last_observed_at_unix_ms: None,
            reason: "spool over max_spool_bytes (65536)".into(),
        })),
    };
    let mut gap_list = Vec::new();
    prost::encoding::bytes::encode(1, &gap.encode_to_vec(), &mut gap_list);
    let ack = report_once(
        &collector.url(),
        mutual(&creds, ca.clone()),
        signed(&creds.key_pem, 4, gap_list.clone(), ""),
    )
    .await
    .expect("a gap record may open a hole");
    assert_eq!((ack.stored, ack.duplicates), (1, 0));
    let ack = report_once(
        &collector.url(),
        mutual(&creds, ca.clone()),
        signed(&creds.key_pem, 5, forged_items(5, "host", ""), ""),
    )
    .await
    .expect("the next sequence follows the gap");
    assert_eq!(ack.stored, 1);
    // A gap record for sequences already stored (the ack was lost) is a duplicate, not a
    // conflict.
    let ack = report_once(
        &collector.url(),
        mutual(&creds, ca),
        signed(&creds.key_pem, 4, gap_list, ""),
    )
    .await
    .expect("resent gap record");
    assert_eq!((ack.stored, ack.duplicates), (0, 1));
    let stored = collector.evidence(Some(&agent_id));
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["check"], "gap");
    collector.admin(&["verify"]).expect_ok("verify");
}

#[tokio::test]
async fn a_collector_at_its_stream_limit_answers_busy_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("collector.toml");
    std::fs::write(&config, "max_concurrent_streams = 1\n").expect("write config");
    let collector = Collector::start_with(
        &tmp.path().join("collector"),
        "127.0.0.1:0",
        &["--config", config.to_str().expect("path")],
    );
    let holder = Agent::new(&tmp.path().join("holder"));
    holder.enroll_with(&collector);
    let agent = Agent::new(&tmp.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);

    // One stream held open takes the only place.
    let (requests, held) = open_stream(&collector, &holder).await;

    let busy = tokio::task::spawn_blocking({
        let agent = agent.clone();
        move || agent.run_once()
    })
    .await
    .expect("join");
    assert!(!busy.ok(), "{busy:?}");
    assert!(
        busy.stderr
            .contains("the collector is busy: 1 report streams are open"),
        "{busy:?}"
    );
    assert_eq!(agent.spool_files().len(), 1, "kept for the next attempt");

    drop(requests);
    drop(held);
    let mut delivered = None;
    for _ in 0..20 {
        let run = tokio::task::spawn_blocking({
            let agent = agent.clone();
            move || agent.run_once()
        })
        .await
        .expect("join");
        if run.ok() {
            delivered = Some(run);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(delivered.is_some(), "the place came free");
    assert!(agent.spool_files().is_empty());
    let sequences: Vec<u64> = collector
        .evidence(Some(&agent_id))
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect();
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "nothing lost, nothing doubled");
}
