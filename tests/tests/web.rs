//! The reviewers' web page in headless Chromium against a real collector with replayed hosts:
//! sign in, see the failing control, open the host, acknowledge its corrective action with a
//! reason, find the step in the trail and the audit log, sign out. A viewer can read but not
//! change anything; a form posted from another site is refused; a host whose name is HTML is
//! shown as text. Screenshots of the main pages land in target/test-artifacts/screenshots/.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use evident_tests::browser::Browser;
use evident_tests::{Agent, Collector, LATE_UPDATES_POLICY, binary, debian_replay, wait_for_some};
use serde_json::Value;

/// A host name an attacker who controls a machine could give it.
const EVIL_HOSTNAME: &str = "<img src=x onerror=alert(1)><b>evil</b>";
const ALICE_PASSWORD: &str = "alice's long password";
const VICTOR_PASSWORD: &str = "victor's long password";
const ADA_PASSWORD: &str = "ada's very long password";

fn add_user(collector: &Collector, dir: &Path, name: &str, role: &str, password: &str) {
    let file = dir.join(format!("{name}.password"));
    std::fs::write(&file, password).expect("password file");
    collector
        .admin(&[
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-file",
            file.to_str().expect("utf-8"),
        ])
        .expect_ok("user add");
}

/// Enrols an agent from inside a UTS namespace whose host name is `hostname`: the collector
/// learns the name the way it learns any host's name.
fn enroll_named(collector: &Collector, state_dir: &Path, hostname: &str) -> String {
    let out = Command::new("unshare")
        .args([
            "--uts",
            "sh",
            "-c",
            r#"printf %s "$1" > /proc/sys/kernel/hostname && shift && exec "$@""#,
            "sh",
            hostname,
        ])
        .arg(binary("evident-agent"))
        .args([
            "enroll",
            "--collector",
            &collector.url(),
            "--token",
            &collector.token(&[]),
        ])
        .args(["--ca-fingerprint", &collector.fingerprint(), "--state-dir"])
        .arg(state_dir)
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "enrol as {hostname:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .trim()
        .strip_prefix("enrolled as ")
        .expect("agent id")
        .to_owned()
}

fn sign_in(browser: &Browser, web: &str, name: &str, password: &str) {
    browser.goto(&format!("{web}/")).expect("open the page");
    assert!(
        browser.current_url().expect("url").contains("/login"),
        "signed out, the page sends people to sign in"
    );
    browser.fill("#name", name).expect("name");
    browser.fill("#password", password).expect("password");
    browser.submit("#login-form").expect("sign in");
    browser
        .wait_for_text(&format!("{name} ("), Duration::from_secs(10))
        .expect("signed in");
}

fn sign_out(browser: &Browser) {
    browser
        .submit("form[action=\"/logout\"]")
        .expect("sign out");
    browser
        .wait_for_text("Sign in to review it", Duration::from_secs(10))
        .expect("back at the sign-in page");
}

/// Posts a form over HTTPS the way a script (not a browser) would: trusting the collector's
/// CA, sending `cookie`, no Origin header. Returns the status code and the whole response.
fn post_form(collector: &Collector, path: &str, cookie: &str, body: &str) -> (u16, String) {
    let (status, response) = request(collector, "POST", path, cookie, body);
    (status, String::from_utf8_lossy(&response).into_owned())
}

/// One HTTPS request with a session cookie; the status and the raw response (head and body).
fn request(
    collector: &Collector,
    method: &str,
    path: &str,
    cookie: &str,
    body: &str,
) -> (u16, Vec<u8>) {
    let web = collector.web_url();
    let host = web.trim_start_matches("https://").to_owned();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(collector.data_dir.join("tls/ca.pem")).expect("ca.pem");
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let connection =
        rustls::ClientConnection::new(Arc::new(config), server_name).expect("tls client");
    let tcp = TcpStream::connect(&host).expect("connect");
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, response)
}

/// The body of a response that is not chunked (the downloads set a length).
fn body_of(response: &[u8]) -> &[u8] {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of the head");
    &response[at + 4..]
}

/// Serves `html` to every request on a loopback port of its own: another site.
fn serve_other_site(html: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    format!("http://{address}")
}

fn actions(collector: &Collector) -> Vec<Value> {
    let out = collector
        .admin(&["actions", "list", "--json"])
        .expect_ok("actions list");
    serde_json::from_str::<Value>(&out.stdout)
        .expect("json")
        .as_array()
        .expect("array")
        .clone()
}

#[test]
fn reviewers_work_in_the_browser_and_cannot_be_tricked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, LATE_UPDATES_POLICY).expect("policy");
    let collector = Collector::start_with(
        &dir.path().join("collector"),
        "127.0.0.1:0",
        &[
            "--policy",
            policy_file.to_str().expect("utf-8"),
            "--evaluation-interval-secs",
            "1",
        ],
    );
    add_user(&collector, dir.path(), "alice", "reviewer", ALICE_PASSWORD);
    add_user(&collector, dir.path(), "victor", "viewer", VICTOR_PASSWORD);
    add_user(&collector, dir.path(), "ada", "admin", ADA_PASSWORD);

    let agent = Agent::new(&dir.path().join("agent"));
    let agent_id = agent.enroll_with(&collector);
    agent
        .run_once_replaying(&debian_replay(), &[])
        .expect_ok("a host with 20 security updates pending");
    let evil = Agent::new(&dir.path().join("evil"));
    let evil_id = enroll_named(&collector, &evil.state_dir, EVIL_HOSTNAME);
    evil.run_once_replaying(&debian_replay(), &[])
        .expect_ok("the evil host reports too");
    let opened = wait_for_some(30, "actions to open for both hosts", || {
        let list = actions(&collector);
        (list.len() == 2).then_some(list)
    });
    let action_id = opened
        .iter()
        .find(|a| a["agent_id"] == agent_id.as_str())
        .and_then(|a| a["id"].as_u64())
        .expect("the first host's action");
    let web = collector.web_url();

    let browser = Browser::start().expect("headless Chromium");
    browser.goto(&format!("{web}/")).expect("open");
    browser.screenshot("login").expect("screenshot");
    sign_in(&browser, &web, "alice", ALICE_PASSWORD);
    let session = browser
        .cookie("__Host-evident-session")
        .expect("a session cookie");
    assert!(session.http_only && session.secure, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");

    // The overview: A.8.8 fails on both hosts.
    browser
        .wait_for_text("A.8.8", Duration::from_secs(5))
        .expect("the control");
    let overview = browser.text("#controls").expect("controls table");
    let a88 = overview
        .lines()
        .find(|l| l.contains("A.8.8"))
        .expect("A.8.8 row");
    assert!(a88.contains("fail") && a88.contains("0 / 2"), "{a88}");
    assert_eq!(browser.text("#hosts-count").expect("hosts"), "2");
    browser.screenshot("overview").expect("screenshot");

    // The control, then the host from its failing hosts.
    browser
        .click("a[href^=\"/controls/iso27001-2022/A.8.8\"]")
        .expect("open the control");
    browser
        .wait_for_text("Security updates are installed", Duration::from_secs(5))
        .expect("the rule");
    browser.screenshot("control").expect("screenshot");
    browser
        .click(&format!("a[href^=\"/hosts/{agent_id}\"]"))
        .expect("open the host");
    browser
        .wait_for_text("Corrective actions", Duration::from_secs(5))
        .expect("the host page");
    let host_actions = browser.text("#host-actions").expect("its actions");
    assert!(host_actions.contains("open"), "{host_actions}");
    let timeline = browser.text("#timeline").expect("timeline");
    assert!(timeline.contains("20 security"), "{timeline}");
    browser.screenshot("host").expect("screenshot");

    // The patch item: typed facts and a chain that verifies.
    browser
        .goto(&format!("{web}/evidence/{agent_id}/2"))
        .expect("evidence");
    let verdict = browser.text("#verification-summary").expect("verification");
    assert!(verdict.contains("This item verifies"), "{verdict}");
    assert!(
        browser
            .text("#facts")
            .expect("facts")
            .contains("pending_security_count")
    );
    browser.screenshot("evidence").expect("screenshot");

    // Acknowledge the action with a reason; it shows in the trail.
    browser
        .goto(&format!("{web}/actions/{action_id}"))
        .expect("action");
    browser
        .fill("#step-ack input[name=owner]", "alice")
        .expect("owner");
    browser
        .fill(
            "#step-ack input[name=reason]",
            "patching in tonight's window",
        )
        .expect("reason");
    browser.submit("#step-ack").expect("ack");
    browser
        .wait_for_text("patching in tonight's window", Duration::from_secs(5))
        .expect("the step in the trail");
    assert_eq!(
        browser.text("#action-state").expect("state"),
        "acknowledged"
    );
    let trail = browser.text("#trail").expect("trail");
    assert!(
        trail.contains("acknowledged") && trail.contains("alice"),
        "{trail}"
    );
    browser.screenshot("action").expect("screenshot");
    // A step the lifecycle refuses is named, and nothing is recorded.
    browser
        .fill("#step-comment input[name=reason]", "   ")
        .expect("blank reason");
    browser.submit("#step-comment").expect("comment");
    browser
        .wait_for_text("the reason is empty", Duration::from_secs(5))
        .expect("refused with why");

    // Exports: the audit report names the failing control; the evidence bundle verifies offline
    // with nothing but the CA certificate.
    browser.goto(&format!("{web}/exports")).expect("exports");
    browser.screenshot("exports").expect("screenshot");
    let session = browser.cookie("__Host-evident-session").expect("session");
    let cookie = format!("{}={}", session.name, session.value);
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let (status, report) = request(
        &collector,
        "GET",
        &format!("/exports/download?kind=report&from={today}&to={today}"),
        &cookie,
        "",
    );
    let report = String::from_utf8_lossy(&report).into_owned();
    assert_eq!(status, 200, "{report}");
    assert!(
        report.contains("A.8.8") && report.contains("text/html"),
        "{report}"
    );
    let (status, bundle) = request(
        &collector,
        "GET",
        &format!("/exports/download?kind=bundle&from={today}&to={today}"),
        &cookie,
        "",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
    let bundle_file = dir.path().join("bundle.tar");
    std::fs::write(&bundle_file, body_of(&bundle)).expect("write the bundle");
    evident_tests::run(
        &binary("evident-collector"),
        &[
            "bundle",
            "verify",
            bundle_file.to_str().expect("utf-8"),
            "--ca",
            collector
                .data_dir
                .join("tls/ca.pem")
                .to_str()
                .expect("utf-8"),
        ],
    )
    .expect_ok("the downloaded bundle verifies offline");
    let (status, bad) = request(
        &collector,
        "GET",
        &format!("/exports/download?kind=report&from={today}&to=2020-01-01"),
        &cookie,
        "",
    );
    assert_eq!(status, 400, "an end before the start is refused");
    assert!(
        String::from_utf8_lossy(&bad).contains("give an end after the start"),
        "{}",
        String::from_utf8_lossy(&bad)
    );

    // The audit log has the sign-in, the step and the exports.
    browser.goto(&format!("{web}/audit")).expect("audit");
    let audit = browser.text("#audit").expect("audit table");
    assert!(
        audit.contains("sign-in") && audit.contains("alice"),
        "{audit}"
    );
    assert!(
        audit.contains("action.step") && audit.contains("patching in tonight's window"),
        "{audit}"
    );
    assert!(
        audit.contains("export.report") && audit.contains("export.bundle"),
        "{audit}"
    );
    browser.screenshot("audit").expect("screenshot");

    // The evil host's name is text, not markup.
    browser.goto(&format!("{web}/hosts?q=evil")).expect("hosts");
    let hosts = browser.text("#hosts").expect("hosts table");
    assert!(hosts.contains(EVIL_HOSTNAME), "shown as typed: {hosts}");
    assert_eq!(
        browser.count("#hosts img").expect("count"),
        0,
        "no image element"
    );
    assert_eq!(
        browser.count("#hosts td b").expect("count"),
        0,
        "no bold element"
    );
    browser.goto(&format!("{web}/hosts")).expect("hosts");
    browser.screenshot("hosts").expect("screenshot");
    browser
        .goto(&format!("{web}/hosts/{evil_id}"))
        .expect("evil host");
    assert_eq!(browser.text("#host-name").expect("name"), EVIL_HOSTNAME);
    browser.goto(&format!("{web}/actions")).expect("actions");
    browser.screenshot("actions").expect("screenshot");

    // A form on another site that posts to the collector is refused and changes nothing.
    let forged = format!(
        r#"<!DOCTYPE html><html><body><form id="forged" method="post" action="{web}/actions/{action_id}/step">
        <input name="csrf" value="guessed"><input name="step" value="comment">
        <input name="reason" value="forged by another site"><button type="submit">win a prize</button>
        </form></body></html>"#
    );
    let other = serve_other_site(forged);
    browser.goto(&other).expect("the other site");
    browser.submit("#forged").expect("post the forged form");
    browser
        .wait_for_text("cross-site request refused", Duration::from_secs(5))
        .expect("refused");
    browser
        .goto(&format!("{web}/actions/{action_id}"))
        .expect("action");
    assert!(
        !browser
            .body_text()
            .expect("text")
            .contains("forged by another site"),
        "nothing recorded"
    );

    sign_out(&browser);
    browser
        .goto(&format!("{web}/actions"))
        .expect("after sign-out");
    assert!(browser.current_url().expect("url").contains("/login"));

    // A viewer reads but cannot change: no step forms, and a posted step is refused.
    sign_in(&browser, &web, "victor", VICTOR_PASSWORD);
    browser
        .goto(&format!("{web}/actions/{action_id}"))
        .expect("action");
    assert_eq!(
        browser.count("form.step").expect("count"),
        0,
        "no forms for a viewer"
    );
    let cookie = browser
        .cookie("__Host-evident-session")
        .expect("viewer session");
    let csrf = browser
        .attribute("form[action=\"/logout\"] input[name=csrf]", "value")
        .expect("the session's csrf token");
    let (status, body) = post_form(
        &collector,
        &format!("/actions/{action_id}/step"),
        &format!("{}={}", cookie.name, cookie.value),
        &format!("csrf={csrf}&step=comment&reason=viewer+tries"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("reviewer role"), "{body}");
    browser
        .goto(&format!("{web}/enrolment"))
        .expect("enrolment");
    assert!(
        browser
            .body_text()
            .expect("text")
            .contains("needs the admin role"),
        "a viewer cannot create enrolment tokens"
    );
    browser.goto(&format!("{web}/")).expect("overview");
    sign_out(&browser);

    // An admin creates an enrolment token and sees the agent's command line.
    sign_in(&browser, &web, "ada", ADA_PASSWORD);
    browser
        .goto(&format!("{web}/enrolment"))
        .expect("enrolment");
    browser.submit("#token-form").expect("create a token");
    let command = browser.text("#enrol-command").expect("command line");
    assert!(
        command.contains("evident-agent enroll") && command.contains("--token evt_"),
        "{command}"
    );
    browser.screenshot("enrolment").expect("screenshot");

    // The audit log names the refusals too.
    browser.goto(&format!("{web}/audit")).expect("audit");
    let audit = browser.text("#audit").expect("audit table");
    assert!(
        audit.contains("victor")
            && audit.contains("refused")
            && audit.contains("enrolment-token.create"),
        "{audit}"
    );
}

#[test]
fn wrong_passwords_are_throttled_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(&dir.path().join("collector"));
    add_user(&collector, dir.path(), "alice", "reviewer", ALICE_PASSWORD);
    let web = collector.web_url();
    let browser = Browser::start().expect("headless Chromium");
    for attempt in 1..=5 {
        browser.goto(&format!("{web}/login")).expect("login page");
        browser.fill("#name", "alice").expect("name");
        browser.fill("#password", "guess").expect("password");
        browser.submit("#login-form").expect("submit");
        browser
            .wait_for_text("Wrong name or password", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
    }
    // The sixth attempt waits, even with the right password.
    browser.goto(&format!("{web}/login")).expect("login page");
    browser.fill("#name", "alice").expect("name");
    browser.fill("#password", ALICE_PASSWORD).expect("password");
    browser.submit("#login-form").expect("submit");
    browser
        .wait_for_text("too many failed sign-ins", Duration::from_secs(5))
        .expect("throttled");
    let db = rusqlite::Connection::open(collector.database()).expect("db");
    let refused: i64 = db
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'sign-in' AND outcome = 'refused'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(refused, 6, "five wrong passwords and one throttled attempt");
}
