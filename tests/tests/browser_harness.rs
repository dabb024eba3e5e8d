//! The browser harness itself (tests/src/browser.rs) against a tiny page served from this test:
//! a form is filled and posted, the answer is read back, a cookie's flags are seen, a screenshot
//! is a real PNG, and a missing element fails quickly with the page in the message.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use evident_tests::browser::{Browser, WINDOW_SIZE};

/// A page a user is asked to sign in on, and the page the sign-in answers with.
const LOGIN_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title>
<style>body { font-family: sans-serif; margin: 3em; } label { display: block; margin: .5em 0; }</style>
</head><body>
<h1>Sign in</h1>
<form id="login" method="post" action="/login">
  <label>User <input id="user" name="user"></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button type="submit">Sign in</button>
</form>
</body></html>"#;

/// Serves `LOGIN_PAGE` and echoes a posted user name, escaped, on 127.0.0.1:0. Plain std
/// threads like proxy.rs: one request per connection (`Connection: close`), one thread per
/// connection because Chromium opens speculative connections it may never send on. The
/// listener lives until the test process ends.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test page's listener");
    let address = listener.local_addr().expect("listener address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    format!("http://{address}")
}

fn answer(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    let mut content_length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, cookies, page) = match request_line.split_whitespace().take(2).collect::<Vec<_>>()
        [..]
    {
        ["GET", "/login"] => ("200 OK", "", LOGIN_PAGE.to_owned()),
        ["POST", "/login"] => {
            let user = form_field(&String::from_utf8_lossy(&body), "user").unwrap_or_default();
            (
                "200 OK",
                "Set-Cookie: session=s1; Path=/; HttpOnly; SameSite=Strict\r\n\
                 Set-Cookie: theme=dark; Path=/\r\n",
                format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signed in</title></head>\
                     <body style=\"font-family: sans-serif; margin: 3em\"><h1>Signed in</h1>\
                     <p id=\"echo\">Hello, {}</p></body></html>",
                    escape_html(&user)
                ),
            )
        }
        _ => ("404 Not Found", "", "<h1>Not found</h1>".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n{cookies}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    let _ = reader.get_mut().write_all(response.as_bytes());
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "a PNG signature, got {:?}",
        &png[..png.len().min(8)]
    );
    assert_eq!(&png[12..16], b"IHDR", "the first chunk of a PNG is IHDR");
    let number = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    (number(16), number(20))
}

/// Whether any process is left in the process group `group`.
fn group_alive(group: u32) -> bool {
    let out = Command::new("ps")
        .args(["-e", "-o", "pgid=,stat="])
        .output()
        .expect("run ps");
    String::from_utf8_lossy(&out.stdout).lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.next() == Some(&group.to_string())
            && fields.next().is_some_and(|stat| !stat.starts_with('Z'))
    })
}

#[test]
fn fills_a_form_posts_it_and_reads_the_answer() {
    let site = serve();
    let browser = Browser::start().expect("start headless Chromium");
    browser
        .goto(&format!("{site}/login"))
        .expect("open the login page");

    // Markup in the user name comes back escaped, so the page shows it as text and runs nothing
    // (a script that ran would leave an alert open and fail the next command).
    let user = r#"<script>alert("x")</script> ada"#;
    browser.fill("#user", user).expect("type the user name");
    browser
        .fill("#password", "hunter2")
        .expect("type the password");
    let login = browser
        .screenshot("harness-login")
        .expect("screenshot the filled-in form");
    browser.submit("form#login").expect("submit the form");
    browser
        .wait_for_text("Signed in", Duration::from_secs(5))
        .expect("the answer page");
    assert_eq!(
        browser.text("#echo").expect("echo"),
        format!("Hello, {user}")
    );
    assert!(browser.body_text().expect("page text").contains("<script>"));
    assert_eq!(browser.count("script").expect("count scripts"), 0);
    assert_eq!(browser.current_url().expect("url"), format!("{site}/login"));

    let session = browser.cookie("session").expect("the session cookie");
    assert_eq!(session.value, "s1");
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    assert!(!session.secure, "served over plain HTTP: {session:?}");
    let theme = browser.cookie("theme").expect("the theme cookie");
    assert!(!theme.http_only, "{theme:?}");
    assert!(browser.cookie("absent").is_err());

    let signed_in = browser
        .screenshot("harness-signed-in")
        .expect("screenshot the answer");
    for path in [login, signed_in] {
        let png = std::fs::read(&path).expect("read the screenshot");
        assert!(
            png.len() > 5_000,
            "{} is only {} bytes",
            path.display(),
            png.len()
        );
        // The screenshot is the viewport: the window's width, its height less the toolbar
        // headless Chromium still reserves.
        let (width, height) = png_size(&png);
        assert_eq!(width, WINDOW_SIZE.0, "{}", path.display());
        assert!(
            height > WINDOW_SIZE.1 / 2 && height <= WINDOW_SIZE.1,
            "{}: {height}",
            path.display()
        );
    }

    let group = browser.driver_pid();
    assert!(group_alive(group));
    drop(browser);
    assert!(
        !group_alive(group),
        "chromedriver or Chromium outlived the Browser"
    );
}

#[test]
fn a_missing_element_fails_quickly_and_shows_the_page() {
    let site = serve();
    let mut browser = Browser::start().expect("start headless Chromium");
    browser
        .goto(&format!("{site}/login"))
        .expect("open the login page");
    browser.set_wait(Duration::from_millis(300));

    let started = Instant::now();
    let error = browser
        .click("#no-such-button")
        .expect_err("no such element");
    let message = format!("{error:#}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    for part in [
        "#no-such-button",
        &format!("current URL: {site}/login"),
        "Sign in",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    let error = browser
        .wait_for_text("Welcome back", Duration::from_millis(300))
        .expect_err("the text is never shown");
    let message = format!("{error:#}");
    assert!(
        message.contains("Welcome back") && message.contains("User"),
        "{message}"
    );
    assert!(browser.screenshot("../escape").is_err());
}
