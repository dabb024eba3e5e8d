//! The JSON API through the real collector, and `docs/openapi.json` held true against it: the
//! router and the document name the same operations, every answer (errors too) matches the
//! schema the document gives for its status, steps on corrective actions are refused or taken
//! by role and land in the audit log, only valid API tokens get in, and an enrolment token an
//! admin creates over the API enrols a real agent.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use evident_collector::api::{OPENAPI, ROUTES};
use evident_tests::{
    Agent, Collector, LATE_UPDATES_POLICY, binary, debian_replay, run, wait_for_some,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

fn openapi() -> Value {
    serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[test]
fn the_router_and_the_openapi_document_name_the_same_operations() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_lowercase(), r.path.to_owned()))
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "a route is listed twice");
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| ((*m).to_owned(), path.clone()))
        })
        .collect();
    assert_eq!(
        served, documented,
        "ROUTES (left) and docs/openapi.json (right) disagree"
    );
    for (method, path) in &documented {
        let operation = &paths[path][method];
        // Every `{name}` of the path is a declared path parameter, and nothing else is.
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        assert_eq!(in_path, declared, "{method} {path}: path parameters");
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no response"
        );
    }
    // Every reference resolves, and every schema compiles as JSON Schema 2020-12.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not local"));
        assert!(doc.pointer(pointer).is_some(), "{reference} resolves");
    }
    for name in doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        validator(
            &doc,
            &json!({ "$ref": format!("#/components/schemas/{name}") }),
        );
    }
    // The schemas bite: an undocumented field, or a wrong type deep behind references, fails.
    let error = validator(&doc, &json!({ "$ref": "#/components/schemas/Error" }));
    assert!(error.is_valid(&json!({ "error": "why" })));
    assert!(!error.is_valid(&json!({ "error": "why", "hint": "undocumented" })));
    let page = validator(&doc, &json!({ "$ref": "#/components/schemas/ActionPage" }));
    let bad_event = json!({ "total": 1, "page": 1, "pages": 1, "actions": [{
        "id": 1, "agent_id": "a", "hostname": "h", "rule_id": "r", "rule_title": "t",
        "severity": "high", "opened_at_ms": 0, "state": "open", "owner": null,
        "due_at_ms": null, "overdue": false, "risk_expires_at_ms": null,
        "events": [{ "id": "not a number" }]
    }]});
    assert!(!page.is_valid(&bad_event));
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A validator for `schema` that can follow `#/components/schemas/...`: OpenAPI 3.1 schemas
/// are JSON Schema 2020-12, so the document's components are embedded in a root schema.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": { "schemas": doc["components"]["schemas"].clone() },
    });
    for (key, value) in schema.as_object().expect("a schema object") {
        root[key] = value.clone();
    }
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

/// The JSON schema the document gives for `method path` answering `status`.
fn response_schema(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    documented_response(doc, method, path, status)["content"]["application/json"]["schema"].clone()
}

/// The response the document gives for `method path` answering `status`, references followed.
fn documented_response(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    let operation = &doc["paths"][path][method.to_lowercase()];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let mut response = operation["responses"][status.to_string()].clone();
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which the document does not list"
    );
    if let Some(reference) = response["$ref"].as_str() {
        response = doc
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference}"))
            .clone();
    }
    response
}

/// An HTTPS client for the collector's web listener, trusting only the collector's CA.
struct Api {
    runtime: tokio::runtime::Runtime,
    address: String,
    tls: tokio_rustls::TlsConnector,
    doc: Value,
    /// `(method, path template)` of every operation called, to prove all were.
    called: std::cell::RefCell<BTreeSet<(String, String)>>,
}

#[derive(Debug)]
struct Download {
    status: u16,
    content_type: String,
    bytes: Bytes,
}

impl Download {
    fn text(&self) -> String {
        String::from_utf8(self.bytes.to_vec()).expect("a text download is UTF-8")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("a JSON download")
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Value,
}

impl Api {
    fn new(collector: &Collector) -> Api {
        let addr_file = collector.data_dir.join("web.addr");
        let address = wait_for_some(30, "the web listener's address", || {
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|t| t.ends_with('\n'))
                .map(|t| t.trim().to_owned())
        });
        let ca = CertificateDer::from_pem_file(collector.data_dir.join("tls/ca.pem"))
            .expect("the collector's CA certificate");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("add the CA");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Api {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            address,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            doc: openapi(),
            called: Default::default(),
        }
    }

    /// One request on its own connection; `template` is the documented path the request is
    /// an instance of, and the answer is validated against the document's schema for it.
    fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let answer = self.raw(method, &format!("/api/v1{path}"), token, body);
        let schema = response_schema(&self.doc, method, template, answer.status);
        self.check(&schema, &answer.body, &format!("{method} {path}"));
        self.called
            .borrow_mut()
            .insert((method.to_owned(), template.to_owned()));
        answer
    }

    fn check(&self, schema: &Value, body: &Value, what: &str) {
        let validator = validator(&self.doc, schema);
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} does not match docs/openapi.json: {errors:#?}\n{body:#}"
        );
    }

    fn get(&self, template: &str, path: &str, token: &str) -> Answer {
        self.call("GET", template, path, Some(token), None)
    }

    /// A download (CSV, HTML, OSCAL JSON, tar) of a documented GET: its status must be
    /// documented, its content type the one the document gives, a JSON answer must match the
    /// document's schema, and every refusal is JSON matching the document too.
    fn download(&self, template: &str, path: &str, token: &str) -> Download {
        let (status, headers, bytes) =
            self.fetch("GET", &format!("/api/v1{path}"), Some(token), None);
        self.called
            .borrow_mut()
            .insert(("GET".to_owned(), template.to_owned()));
        let content_type = headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        let response = documented_response(&self.doc, "GET", template, status);
        let documented: Vec<&String> = response["content"]
            .as_object()
            .map(|c| c.keys().collect())
            .unwrap_or_default();
        assert!(
            documented.iter().any(|t| *t == media_type),
            "GET {path} answered {status} as {content_type:?}, the document says {documented:?}: {bytes:?}"
        );
        if media_type == "application/json" {
            let body: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("GET {path} answered {status} with no JSON ({e})"));
            let schema = response["content"]["application/json"]["schema"].clone();
            self.check(&schema, &body, &format!("GET {path}"));
        }
        if status == 200 {
            let disposition = headers
                .get(hyper::header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                disposition.starts_with("attachment; filename=\"evident-"),
                "GET {path}: Content-Disposition {disposition:?}"
            );
        }
        Download {
            status,
            content_type,
            bytes,
        }
    }

    fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
        let (status, headers, bytes) = self.fetch(method, path, token, body);
        assert_eq!(
            headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{method} {path} answered {status} with {bytes:?}"
        );
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{method} {path} answered {status} with no JSON ({e}): {bytes:?}")
        });
        Answer {
            status,
            headers,
            body,
        }
    }

    fn fetch(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, hyper::HeaderMap, Bytes) {
        self.runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(&self.address)
                .await
                .expect("connect to the web listener");
            let name = ServerName::try_from("localhost").expect("server name");
            let tls = self.tls.connect(name, tcp).await.expect("TLS handshake");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .expect("HTTP handshake");
            tokio::spawn(connection);
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.address);
            if let Some(token) = token {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let payload = match body {
                Some(body) => {
                    request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                    Bytes::from(body.to_string())
                }
                None => Bytes::new(),
            };
            let response = sender
                .send_request(request.body(Full::new(payload)).expect("request"))
                .await
                .expect("send the request");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("read the body")
                .to_bytes();
            (status, headers, bytes)
        })
    }
}

/// Adds a user with `role` and returns an API token for it.
fn user_with_token(collector: &Collector, dir: &Path, name: &str, role: &str) -> String {
    let password = dir.join(format!("{name}.password"));
    std::fs::write(&password, "a long enough password\n").expect("password file");
    collector
        .admin(&[
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-file",
            password.to_str().expect("utf-8"),
        ])
        .expect_ok("user add");
    collector
        .admin(&["user", "token", name])
        .expect_ok("user token")
        .stdout
        .trim()
        .to_owned()
}

fn start(dir: &Path, extra: &[&str]) -> Collector {
    let mut args = vec!["--web-listen", "127.0.0.1:0"];
    args.extend(extra);
    Collector::start_with(&dir.join("collector"), "127.0.0.1:0", &args)
}

/// The audit entries of `action`, oldest first, as (actor, channel, outcome, detail).
fn audited(api: &Api, token: &str, action: &str) -> Vec<(String, String, String, String)> {
    let log = api.get("/audit-log", "/audit-log", token);
    let mut rows: Vec<_> = log.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == action)
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (
                text("actor"),
                text("channel"),
                text("outcome"),
                text("detail"),
            )
        })
        .collect();
    rows.reverse();
    rows
}

#[test]
fn every_answer_matches_the_document_and_steps_are_taken_by_role_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, LATE_UPDATES_POLICY).expect("policy");
    let before = jiff::Timestamp::now().to_string();
    let collector = start(
        dir.path(),
        &[
            "--policy",
            policy.to_str().expect("utf-8"),
            "--evaluation-interval-secs",
            "1",
        ],
    );
    let api = Api::new(&collector);
    let viewer = user_with_token(&collector, dir.path(), "vera", "viewer");
    let reviewer = user_with_token(&collector, dir.path(), "rita", "reviewer");

    // A Debian host with twenty security updates pending longer than the policy allows.
    let agent = Agent::new(&dir.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "tags = [\"laptop\"]\n").expect("agent config");
    agent
        .run_once_replaying(
            &debian_replay(),
            &["--config", config.to_str().expect("utf-8")],
        )
        .expect_ok("run with pending security updates");
    let id = wait_for_some(30, "an action to open", || {
        let page = api.get("/actions", "/actions", &viewer);
        page.body["actions"][0]["id"].as_i64()
    });

    // The served document is the one in docs/, and needs no token.
    let served = api.call("GET", "/openapi.json", "/openapi.json", None, None);
    assert_eq!(served.body, openapi());

    let status = api.get("/status", "/status", &viewer);
    assert_eq!(status.status, 200);
    assert_eq!(status.body["host_counts"]["total"], 1);
    assert_eq!(status.body["host_counts"]["failing"], 1);
    let a88 = status.body["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .find(|c| c["control"] == "iso27001-2022:A.8.8")
        .expect("A.8.8");
    assert_eq!(a88["status"], "fail");
    let past = api.get(
        "/status",
        &format!("/status?as_of={}", enc(&before)),
        &viewer,
    );
    assert_eq!(past.body["host_counts"]["total"], 0, "before the enrolment");
    let control = api.get(
        "/controls/{framework}/{control}",
        "/controls/iso27001-2022/A.8.8",
        &viewer,
    );
    assert_eq!(
        control.body["rules"][0]["findings"][0]["agent_id"],
        agent_id
    );
    let unknown = api.get(
        "/controls/{framework}/{control}",
        "/controls/iso27001-2022/A.99",
        &viewer,
    );
    assert_eq!(unknown.status, 404);

    let hosts = api.get("/hosts", "/hosts?tag=laptop&status=fail&q=", &viewer);
    assert_eq!(hosts.body["total"], 1);
    assert_eq!(hosts.body["hosts"][0]["agent_id"], agent_id);
    let none = api.get("/hosts", "/hosts?tag=server", &viewer);
    assert_eq!(none.body["total"], 0);
    let bad_page = api.get("/hosts", "/hosts?page=first", &viewer);
    assert_eq!(bad_page.status, 400);
    assert!(
        bad_page.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("page")),
        "{bad_page:?}"
    );

    let host = api.get("/hosts/{agent_id}", &format!("/hosts/{agent_id}"), &viewer);
    assert_eq!(host.body["agent"]["agent_id"], agent_id);
    assert_eq!(host.body["tags"], json!(["laptop"]));
    assert_eq!(host.body["actions"][0]["id"], id);
    let older = api.get(
        "/hosts/{agent_id}",
        &format!("/hosts/{agent_id}?before=2"),
        &viewer,
    );
    assert_eq!(older.body["timeline"][0]["sequence"], 1);
    let missing = api.get("/hosts/{agent_id}", "/hosts/no-such-agent", &viewer);
    assert_eq!(missing.status, 404);

    // The patch item of the first cycle, verified: hash, link and signature.
    let item = api.get(
        "/evidence/{agent_id}/{sequence}",
        &format!("/evidence/{agent_id}/2"),
        &viewer,
    );
    assert_eq!(item.body["check"], "patch");
    assert_eq!(item.body["verified"], true, "{:#}", item.body);
    assert!(item.body["item"]["outcome"]["patch"].is_object());
    let not_a_number = api.get(
        "/evidence/{agent_id}/{sequence}",
        &format!("/evidence/{agent_id}/two"),
        &viewer,
    );
    assert_eq!(not_a_number.status, 400);
    let not_yet = api.get(
        "/evidence/{agent_id}/{sequence}",
        &format!("/evidence/{agent_id}/2?as_of={}", enc(&before)),
        &viewer,
    );
    assert_eq!(not_yet.status, 404, "the item had not arrived then");

    let pending = api.get(
        "/actions",
        &format!("/actions?state=pending&severity=high&overdue=false&agent_id={agent_id}"),
        &viewer,
    );
    assert_eq!(pending.body["total"], 1);
    let bad_moment = api.get("/actions", "/actions?as_of=yesterday-ish", &viewer);
    assert_eq!(bad_moment.status, 400);
    let action = api.get("/actions/{id}", &format!("/actions/{id}"), &viewer);
    assert_eq!(action.body["state"], "open");
    assert_eq!(action.body["events"][0]["actor"], "system");
    let no_action = api.get("/actions/{id}", "/actions/99999", &viewer);
    assert_eq!(no_action.status, 404);

    // Steps: a viewer is refused, a reviewer acknowledges, a second ack conflicts.
    let steps = format!("/actions/{id}/steps");
    let ack = json!({ "step": "ack", "reason": "patch window tonight", "owner": "bob" });
    let refused = api.call(
        "POST",
        "/actions/{id}/steps",
        &steps,
        Some(&viewer),
        Some(&ack),
    );
    assert_eq!(refused.status, 403, "{refused:?}");
    let empty_reason = json!({ "step": "ack", "reason": " ", "owner": "bob" });
    let invalid = api.call(
        "POST",
        "/actions/{id}/steps",
        &steps,
        Some(&reviewer),
        Some(&empty_reason),
    );
    assert_eq!(invalid.status, 400, "{invalid:?}");
    let taken = api.call(
        "POST",
        "/actions/{id}/steps",
        &steps,
        Some(&reviewer),
        Some(&ack),
    );
    assert_eq!(taken.status, 201, "{taken:?}");
    assert_eq!(taken.body["state"], "acknowledged");
    assert_eq!(taken.body["actor"], "rita");
    assert_eq!(taken.body["owner"], "bob");
    let again = api.call(
        "POST",
        "/actions/{id}/steps",
        &steps,
        Some(&reviewer),
        Some(&ack),
    );
    assert_eq!(again.status, 409, "{again:?}");
    assert!(
        again.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("allowed: resolve, accept-risk, comment")),
        "{again:?}"
    );
    let trail = api.get("/actions/{id}", &format!("/actions/{id}"), &viewer);
    assert_eq!(trail.body["state"], "acknowledged");
    assert_eq!(trail.body["events"].as_array().map(Vec::len), Some(2));

    let audit = audited(&api, &viewer, "action.step");
    let summary: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|(actor, channel, outcome, _)| (actor.as_str(), channel.as_str(), outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("vera", "api", "refused"),
            ("rita", "api", "refused"),
            ("rita", "api", "ok"),
            ("rita", "api", "refused"),
        ],
        "{audit:#?}"
    );
    assert!(audit[0].3.contains("viewer"), "{audit:#?}");
    assert!(audit[3].3.contains("allowed:"), "{audit:#?}");
    let paged = api.get("/audit-log", "/audit-log?page=2", &viewer);
    assert_eq!(paged.body["page"], 1, "one page only: page 2 is empty");

    // What is not an operation is a JSON 404 too.
    let nowhere = api.raw("GET", "/api/v1/nowhere", Some(&viewer), None);
    assert_eq!(nowhere.status, 404);
    let error = json!({ "$ref": "#/components/schemas/Error" });
    api.check(&error, &nowhere.body, "GET /api/v1/nowhere");
    let wrong_method = api.raw("GET", &format!("/api/v1{steps}"), Some(&viewer), None);
    assert_eq!(wrong_method.status, 405);
    api.check(&error, &wrong_method.body, "GET on the steps");

    exports_and_checkpoints(
        &api,
        &collector,
        &agent,
        &viewer,
        &agent_id,
        &before,
        dir.path(),
    );

    let gets: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let called = api.called.borrow();
    let missed: Vec<_> = gets.difference(&called).collect();
    assert!(
        missed.is_empty(),
        "GET operations not exercised: {missed:?}"
    );
}

#[test]
fn only_valid_tokens_get_in_and_an_admin_enrols_an_agent_over_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = start(dir.path(), &[]);
    let api = Api::new(&collector);
    let admin = user_with_token(&collector, dir.path(), "ada", "admin");
    let viewer = user_with_token(&collector, dir.path(), "vera", "viewer");
    let leaver = user_with_token(&collector, dir.path(), "lee", "viewer");

    let unauthorized = |answer: &Answer, what: &str| {
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        let challenge = answer
            .headers
            .get(hyper::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{what}: {answer:?}");
    };
    let none = api.call("GET", "/status", "/status", None, None);
    unauthorized(&none, "no token");
    let wrong = api.get("/status", "/status", "eva_0123456789abcdef");
    unauthorized(&wrong, "a wrong token");

    // A token that expired a minute ago, written as `user token` would have written it then.
    let expired = format!("eva_{}", "ab".repeat(32));
    let digest = ring::digest::digest(&ring::digest::SHA256, expired.as_bytes());
    let db = rusqlite::Connection::open(collector.database()).expect("open the database");
    let now_ms = jiff::Timestamp::now().as_millisecond();
    db.execute(
        "INSERT INTO api_tokens (token_sha256, user_id, label, created_at_ms, expires_at_ms)
         SELECT ?1, id, 'old', ?2, ?3 FROM users WHERE name = 'vera'",
        rusqlite::params![digest.as_ref(), now_ms - 120_000, now_ms - 60_000],
    )
    .expect("insert an expired token");
    drop(db);
    unauthorized(&api.get("/status", "/status", &expired), "an expired token");

    assert_eq!(api.get("/status", "/status", &leaver).status, 200);
    collector
        .admin(&["user", "disable", "lee"])
        .expect_ok("user disable");
    unauthorized(
        &api.get("/status", "/status", &leaver),
        "a disabled user's token",
    );

    // Roles: a viewer may not create enrolment tokens; a bad request names the field.
    let request = json!({ "uses": 1, "hours": 1 });
    let forbidden = api.call(
        "POST",
        "/enrolment-tokens",
        "/enrolment-tokens",
        Some(&viewer),
        Some(&request),
    );
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    let zero = api.call(
        "POST",
        "/enrolment-tokens",
        "/enrolment-tokens",
        Some(&admin),
        Some(&json!({ "uses": 0, "hours": 1 })),
    );
    assert_eq!(zero.status, 400, "{zero:?}");
    let unknown_field = api.call(
        "POST",
        "/enrolment-tokens",
        "/enrolment-tokens",
        Some(&admin),
        Some(&json!({ "uses": 1, "days": 1 })),
    );
    assert_eq!(unknown_field.status, 400, "{unknown_field:?}");

    // An admin's token enrols a real agent with what the answer gives it.
    let created = api.call(
        "POST",
        "/enrolment-tokens",
        "/enrolment-tokens",
        Some(&admin),
        Some(&request),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let field = |k: &str| created.body[k].as_str().expect(k).to_owned();
    assert!(field("command").contains(&field("token")));
    assert_eq!(field("ca_fingerprint"), collector.fingerprint());
    let agent = Agent::new(&dir.path().join("agent"));
    let enrolled = agent
        .enroll(
            &field("collector_url"),
            &field("token"),
            &field("ca_fingerprint"),
        )
        .expect_ok("enrol with the API's token");
    assert!(enrolled.stdout.starts_with("enrolled as "), "{enrolled:?}");
    let spent = Agent::new(&dir.path().join("second-agent")).enroll(
        &field("collector_url"),
        &field("token"),
        &field("ca_fingerprint"),
    );
    assert!(!spent.ok(), "a token for one agent enrols one: {spent:?}");

    let audit = audited(&api, &viewer, "enrolment-token.create");
    let outcomes: Vec<(&str, &str)> = audit
        .iter()
        .map(|(actor, _, outcome, _)| (actor.as_str(), outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [("vera", "refused"), ("ada", "refused"), ("ada", "ok")],
        "{audit:#?}"
    );
    assert!(audit.iter().all(|(_, channel, _, _)| channel == "api"));
    assert_eq!(
        audited(&api, &viewer, "api.authenticate").len(),
        3,
        "the wrong, the expired and the disabled user's token"
    );

    // Wrong tokens from one address are slowed down after five in a row: then even a valid
    // token waits, and is let in once the wait is over.
    for _ in 0..5 {
        unauthorized(&api.get("/status", "/status", "eva_wrong"), "a wrong token");
    }
    let throttled = api.get("/status", "/status", &viewer);
    assert_eq!(throttled.status, 429, "{throttled:?}");
    let wait: u64 = throttled
        .headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(api.get("/status", "/status", &viewer).status, 200);
}

/// Exports of the test's period and the checkpoints, as a viewer: the CSV has the rows, the
/// report names A.8.8, the OSCAL documents validate against NIST's schemas, the bundle and a
/// consistency proof from an early checkpoint verify with the real binary offline, every export
/// is in the audit log, and evidence rewritten under a checkpoint is a 409 naming it.
fn exports_and_checkpoints(
    api: &Api,
    collector: &Collector,
    agent: &Agent,
    viewer: &str,
    agent_id: &str,
    before: &str,
    dir: &Path,
) {
    // An early checkpoint the auditor keeps, then a second cycle of evidence.
    collector
        .admin(&["checkpoint", "create"])
        .expect_ok("checkpoint create");
    agent
        .run_once_replaying(
            &debian_replay(),
            &["--config", dir.join("agent.toml").to_str().expect("utf-8")],
        )
        .expect_ok("a second cycle");
    let collector_bin = binary("evident-collector");
    let ca = collector.data_dir.join("tls/ca.pem");
    let ca = ca.to_str().expect("utf-8");

    // The period: from before the test to the end of tomorrow (UTC), dates as the CLI takes.
    let tomorrow = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24))
        .expect("tomorrow")
        .to_string();
    let period = format!("from={}&to={}", enc(before), &tomorrow[..10]);

    let evidence_csv = api.download(
        "/exports/csv",
        &format!("/exports/csv?what=evidence&{period}"),
        viewer,
    );
    assert_eq!(evidence_csv.status, 200, "{evidence_csv:?}");
    assert!(evidence_csv.content_type.starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(evidence_csv.bytes.as_ref());
    let headers = reader.headers().expect("a header row").clone();
    let agent_column = headers
        .iter()
        .position(|h| h == "agent_id")
        .unwrap_or_else(|| panic!("an agent_id column: {headers:?}"));
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("the CSV parses");
    assert!(rows.len() >= 4, "two cycles of evidence: {rows:?}");
    assert!(rows.iter().all(|r| r.get(agent_column) == Some(agent_id)));
    for what in ["results", "actions"] {
        let answer = api.download(
            "/exports/csv",
            &format!("/exports/csv?what={what}&{period}"),
            viewer,
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        let text = answer.text();
        assert!(
            text.lines().count() >= 2,
            "{what}: a header and rows: {text}"
        );
        assert!(text.contains("security-updates"), "{what}: {text}");
    }
    let unknown = api.download(
        "/exports/csv",
        &format!("/exports/csv?what=hosts&{period}"),
        viewer,
    );
    assert_eq!(unknown.status, 400);
    let no_period = api.download("/exports/csv", "/exports/csv?what=evidence", viewer);
    assert_eq!(no_period.status, 400);
    let backwards = api.download(
        "/exports/report",
        "/exports/report?from=2026-10-31&to=2026-10-01",
        viewer,
    );
    assert_eq!(backwards.status, 400);
    let malformed = api.download(
        "/exports/report",
        "/exports/report?from=last-week&to=2026-10-01",
        viewer,
    );
    assert_eq!(malformed.status, 400);

    let report = api.download(
        "/exports/report",
        &format!("/exports/report?{period}"),
        viewer,
    );
    assert_eq!(report.status, 200, "{report:?}");
    assert!(report.content_type.starts_with("text/html"));
    assert!(report.text().contains("A.8.8"));

    for (document, schema) in [
        ("assessment-results", "oscal_assessment-results_schema.json"),
        ("poam", "oscal_poam_schema.json"),
    ] {
        let template = format!("/exports/oscal/{document}");
        let answer = api.download(&template, &format!("{template}?{period}"), viewer);
        assert_eq!(answer.status, 200, "{answer:?}");
        let nist = nist_validator(schema);
        let body = answer.json();
        let errors: Vec<String> = nist
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{document}: {errors:#?}");
    }
    // Long before the test: no action to plan, no evidence to bundle.
    let old_period = "from=2020-01-01&to=2020-01-02";
    let nothing = api.download(
        "/exports/oscal/poam",
        &format!("/exports/oscal/poam?{old_period}"),
        viewer,
    );
    assert_eq!(nothing.status, 404, "{nothing:?}");
    let empty = api.download(
        "/exports/bundle",
        &format!("/exports/bundle?{old_period}"),
        viewer,
    );
    assert_eq!(empty.status, 404, "{empty:?}");

    // The bundle verifies offline with the real binary and the CA certificate.
    let bundle = api.download(
        "/exports/bundle",
        &format!("/exports/bundle?{period}"),
        viewer,
    );
    assert_eq!(bundle.status, 200, "{bundle:?}");
    assert_eq!(bundle.content_type, "application/x-tar");
    let bundle_file = dir.join("bundle.tar");
    std::fs::write(&bundle_file, &bundle.bytes).expect("write the bundle");
    let verified = run(
        &collector_bin,
        &[
            "bundle",
            "verify",
            bundle_file.to_str().expect("utf-8"),
            "--ca",
            ca,
        ],
    );
    assert!(
        verified.ok() && verified.stdout.contains("ok:"),
        "{verified:#?}"
    );

    // Checkpoints: the early one and the one the bundle signed, newest first.
    let list = api.get("/checkpoints", "/checkpoints", viewer);
    assert_eq!(list.status, 200);
    let checkpoints = list.body.as_array().expect("a list").clone();
    assert!(checkpoints.len() >= 2, "{checkpoints:#?}");
    let latest = api.get("/checkpoints/latest", "/checkpoints/latest", viewer);
    assert_eq!(latest.body, checkpoints[0]);
    let early = checkpoints.last().expect("the early checkpoint").clone();
    assert!(early["tree_size"].as_u64() < latest.body["tree_size"].as_u64());
    let old_size = early["tree_size"].to_string();
    let proof = api.get(
        "/checkpoints/consistency",
        &format!("/checkpoints/consistency?old_size={old_size}"),
        viewer,
    );
    assert_eq!(proof.status, 200, "{proof:?}");
    let write = |name: &str, value: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, value.to_string()).expect("write JSON");
        path.to_str().expect("utf-8").to_owned()
    };
    let (old, new, proof_file) = (
        write("old.json", &early),
        write("new.json", &latest.body),
        write("proof.json", &proof.body),
    );
    let consistent = run(
        &collector_bin,
        &[
            "checkpoint",
            "verify-consistency",
            "--old",
            &old,
            "--new",
            &new,
            "--proof",
            &proof_file,
            "--ca",
            ca,
        ],
    );
    assert!(
        consistent.ok() && consistent.stdout.starts_with("ok:"),
        "{consistent:#?}"
    );
    let no_size = api.get(
        "/checkpoints/consistency",
        "/checkpoints/consistency",
        viewer,
    );
    assert_eq!(no_size.status, 400);
    let too_large = api.get(
        "/checkpoints/consistency",
        "/checkpoints/consistency?old_size=1&new_size=1000000",
        viewer,
    );
    assert_eq!(too_large.status, 400, "{too_large:?}");

    // An item's inclusion in the latest checkpoint, checked against that checkpoint's root.
    let inclusion = api.get(
        "/evidence/{agent_id}/{sequence}/inclusion",
        &format!("/evidence/{agent_id}/2/inclusion"),
        viewer,
    );
    assert_eq!(inclusion.status, 200, "{inclusion:?}");
    assert_eq!(inclusion.body["checkpoint"], latest.body);
    let proven = &inclusion.body["inclusion"];
    let hash = |h: &Value| -> [u8; 32] {
        hex::decode(h.as_str().expect("hex"))
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    };
    let path: Vec<[u8; 32]> = proven["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(hash)
        .collect();
    let leaf = evident_collector::transparency::leaf_hash(
        agent_id,
        2,
        &hex::decode(proven["hash"].as_str().expect("hash")).expect("hex"),
    );
    evident_collector::transparency::merkle::verify_inclusion(
        &leaf,
        proven["leaf_index"].as_u64().expect("index"),
        proven["tree_size"].as_u64().expect("size"),
        &path,
        &hash(&latest.body["root_hash"]),
    )
    .expect("the item is in the latest checkpoint's tree");
    let not_covered = api.get(
        "/evidence/{agent_id}/{sequence}/inclusion",
        &format!("/evidence/{agent_id}/99999/inclusion"),
        viewer,
    );
    assert_eq!(not_covered.status, 404);

    // Every export is in the audit log, refused ones too, with the period.
    let csv_audit = audited(api, viewer, "export.csv");
    let outcomes: Vec<(&str, &str, &str)> = csv_audit
        .iter()
        .map(|(actor, channel, outcome, _)| (actor.as_str(), channel.as_str(), outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("vera", "api", "ok"),
            ("vera", "api", "ok"),
            ("vera", "api", "ok"),
            ("vera", "api", "refused"),
            ("vera", "api", "refused"),
        ],
        "{csv_audit:#?}"
    );
    assert!(
        csv_audit[0]
            .3
            .contains(&format!("{} evidence row(s)", rows.len())),
        "{csv_audit:#?}"
    );
    for (action, made) in [
        ("export.report", 1),
        ("export.oscal.assessment-results", 1),
        ("export.oscal.poam", 1),
        ("export.bundle", 1),
    ] {
        let entries = audited(api, viewer, action);
        assert_eq!(
            entries.iter().filter(|e| e.2 == "ok").count(),
            made,
            "{action}: {entries:#?}"
        );
    }
    let log = api.get("/audit-log", "/audit-log", viewer);
    let bundle_entry = log.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "export.bundle" && e["outcome"] == "ok")
        .expect("the bundle's audit entry");
    assert!(
        bundle_entry["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("from ") && t.contains(" to ")),
        "{bundle_entry:#}"
    );

    // Rewritten evidence under a checkpoint: the proofs are refused, naming what changed.
    let db = rusqlite::Connection::open(collector.database()).expect("open the database");
    db.execute_batch("DROP TRIGGER evidence_no_delete;")
        .expect("drop the trigger");
    let newest: i64 = db
        .query_row(
            "SELECT MAX(sequence) FROM evidence WHERE agent_id = ?1",
            [agent_id],
            |r| r.get(0),
        )
        .expect("the newest item");
    db.execute(
        "DELETE FROM evidence WHERE agent_id = ?1 AND sequence = ?2",
        rusqlite::params![agent_id, newest],
    )
    .expect("delete the newest item");
    drop(db);
    let tampered = api.get(
        "/checkpoints/consistency",
        &format!("/checkpoints/consistency?old_size={old_size}"),
        viewer,
    );
    assert_eq!(tampered.status, 409, "{tampered:?}");
    assert!(
        tampered.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no longer matches checkpoint") && e.contains("removed")),
        "{tampered:?}"
    );
    let refused_bundle = api.download(
        "/exports/bundle",
        &format!("/exports/bundle?{period}"),
        viewer,
    );
    assert_eq!(refused_bundle.status, 409, "{refused_bundle:?}");
}

/// NIST's published OSCAL schema `name` (draft-07), vendored in tests/schemas/oscal/.
fn nist_validator(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/oscal")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("the vendored schema");
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::draft7::new(&schema).expect("the schema compiles")
}

fn enc(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}
