//! Headless Chromium driven through chromedriver (WebDriver), for end-to-end tests of web pages.
//!
//! `Browser::start()` runs Debian's `chromedriver` on a free loopback port and opens one session
//! of headless Chromium with a fresh profile in a temporary directory. Dropping the `Browser`
//! ends the session (chromedriver quits Chromium) and then kills chromedriver's whole process
//! group, so no browser process outlives the test even when the test panics.
//!
//! Screenshots: `browser.screenshot("NAME")` writes `target/test-artifacts/screenshots/NAME.png`
//! (the target directory of the running test, so `$CARGO_TARGET_DIR/test-artifacts/...` when
//! that is set) and prints the path on the test's output; `cargo test -- --nocapture` lists them.
//!
//! The API is blocking like the rest of the harness: every call runs on the browser's own
//! current-thread runtime, so use it from a plain `#[test]`, not inside `#[tokio::test]`.
//! Every call that fails says what was expected, the current URL and the start of the page text.

use std::ffi::OsString;
use std::fmt::Display;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// Window size of every session, so screenshots of one page always have one size. A screenshot
/// is the viewport: this width, and this height less the toolbar headless Chromium still
/// reserves (1280x761 with Chromium 148).
pub const WINDOW_SIZE: (u32, u32) = (1280, 900);
/// How long element lookups wait for the element to appear unless `set_wait` changes it.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// Deadline for one WebDriver command (a page load included): against a hang, not a timing claim.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for chromedriver to listen and for Chromium to open its session.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for the calls that only gather context for an error message.
const CONTEXT_TIMEOUT: Duration = Duration::from_secs(2);
/// Characters of page text an error message shows.
const SNIPPET_CHARS: usize = 400;
const INSTALL_HINT: &str =
    "run scripts/install-test-deps (it installs Debian's chromium and chromium-driver)";
/// Debian's Chromium binary itself. `/usr/bin/chromium` is a shell wrapper that adds flags from
/// `/etc/chromium.d` (extensions, API keys, a `/dev/shm` probe that misreads some mounts); the
/// tests pass their own flags instead.
const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// A cookie as the browser holds it, with the flags the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None` as the browser reports it.
    pub same_site: Option<String>,
}

/// chromedriver, killed with its process group (Chromium included) when dropped.
#[derive(Debug)]
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The child leads its own process group (`process_group(0)`), so the negative id reaches
        // chromedriver and every Chromium process it started, and nothing else. (Chromium's
        // crash handler runs in a session of its own and exits by itself once Chromium is gone.)
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session. See the module comment.
pub struct Browser {
    // Fields drop in this order after `Drop::drop` closed the session: the client and its
    // runtime, then chromedriver's process group, then the profile directory nothing writes to
    // any more.
    client: Client,
    runtime: tokio::runtime::Runtime,
    driver: Driver,
    profile: tempfile::TempDir,
    wait: Duration,
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session. Fails, naming
    /// scripts/install-test-deps, when chromedriver or Chromium is not installed.
    pub fn start() -> anyhow::Result<Browser> {
        let chromedriver = installed(std::env::var_os("PATH"), Path::new(CHROMIUM))?;
        let profile = tempfile::Builder::new()
            .prefix("evident-browser-")
            .tempdir()
            .context("create the browser's temporary directory")?;
        let log_path = profile.path().join("chromedriver.log");
        let log = File::create(&log_path).context("create chromedriver.log")?;
        let child = Command::new(&chromedriver)
            // Port 0: chromedriver picks a free port and prints it, so no port is guessed.
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone chromedriver.log")?)
            .stderr(log)
            .process_group(0)
            // Chromium puts its crash database under the default profile whatever
            // --user-data-dir says; keep that in the temporary directory too, not in ~/.config.
            .env("XDG_CONFIG_HOME", profile.path())
            .env("XDG_CACHE_HOME", profile.path())
            .spawn()
            .with_context(|| format!("start {}", chromedriver.display()))?;
        let mut driver = Driver { child };
        let port = wait_for_port(&mut driver, &log_path)?;
        let user_data_dir = profile.path().join("chromium");
        let capabilities = json!({
            "browserName": "chrome",
            // The collector's web listener has a certificate from the collector's own CA.
            "acceptInsecureCerts": true,
            "timeouts": { "pageLoad": COMMAND_TIMEOUT.as_millis() as u64, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Tests run as root, where Chromium refuses to start with its sandbox.
                    "--no-sandbox",
                    format!("--user-data-dir={}", user_data_dir.display()),
                    format!("--window-size={},{}", WINDOW_SIZE.0, WINDOW_SIZE.1),
                    // Containers often mount a 64 MB /dev/shm, which crashes tabs; /tmp is safe.
                    "--disable-dev-shm-usage",
                    // No calls home or updates while a test runs: quieter and deterministic.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--password-store=basic",
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            bail!("capabilities are a JSON object");
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build the browser's runtime")?;
        let url = format!("http://127.0.0.1:{port}");
        // The timer is made inside `block_on`: a tokio timer needs the runtime's context.
        let connect = runtime.block_on(async {
            tokio::time::timeout(
                START_TIMEOUT,
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url),
            )
            .await
        });
        let client = match connect {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => bail!(
                "open a headless Chromium session through chromedriver at {url}: {error}\n\
                 chromedriver log:\n{}",
                read_tail(&log_path)
            ),
            Err(_) => bail!(
                "Chromium did not open a session within {START_TIMEOUT:?}\nchromedriver log:\n{}",
                read_tail(&log_path)
            ),
        };
        Ok(Browser {
            client,
            runtime,
            driver,
            profile,
            wait: DEFAULT_WAIT,
        })
    }

    /// How long `fill`, `click`, `submit` and `text` wait for their element to appear.
    pub fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(self.client.goto(url))
            .map_err(|cause| self.failure(format_args!("expected to open {url}"), cause))
    }

    pub fn current_url(&self) -> anyhow::Result<String> {
        self.command(self.client.current_url())
            .map(|url| url.to_string())
            .map_err(|cause| anyhow!("read the current URL: {cause}"))
    }

    /// Replaces the value of the input matched by `selector` with `text`, typed as keystrokes.
    pub fn fill(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        let element = self.element(selector)?;
        self.command(async {
            element.clear().await?;
            element.send_keys(text).await
        })
        .map_err(|cause| self.failure(format_args!("expected to type into {selector:?}"), cause))
    }

    /// Clicks the element matched by `selector` and waits for a navigation it starts.
    pub fn click(&self, selector: &str) -> anyhow::Result<()> {
        let element = self.element(selector)?;
        self.command(element.click())
            .map_err(|cause| self.failure(format_args!("expected to click {selector:?}"), cause))
    }

    /// Submits the form matched by `form_selector` with its submit button, as a user would (so
    /// the button's name and value are posted and no script can skip the click).
    pub fn submit(&self, form_selector: &str) -> anyhow::Result<()> {
        let form = self.element(form_selector)?;
        let button = self
            .command(form.find(Locator::Css(
                "button[type=submit], input[type=submit], button:not([type])",
            )))
            .map_err(|cause| {
                self.failure(
                    format_args!("expected a submit button in the form {form_selector:?}"),
                    cause,
                )
            })?;
        self.command(button.click()).map_err(|cause| {
            self.failure(
                format_args!("expected to submit the form {form_selector:?}"),
                cause,
            )
        })
    }

    /// The rendered text of the element matched by `selector` (what a user reads: markup in it
    /// shows as text only if the server escaped it).
    pub fn text(&self, selector: &str) -> anyhow::Result<String> {
        let element = self.element(selector)?;
        self.command(element.text())
            .map_err(|cause| self.failure(format_args!("expected the text of {selector:?}"), cause))
    }

    /// The attribute `name` of the element matched by `selector` (e.g. a hidden input's value).
    pub fn attribute(&self, selector: &str, name: &str) -> anyhow::Result<String> {
        let element = self.element(selector)?;
        self.command(element.attr(name))
            .map_err(|cause| {
                self.failure(format_args!("expected the {name} of {selector:?}"), cause)
            })?
            .ok_or_else(|| {
                self.failure(
                    format_args!("expected {selector:?} to have a {name} attribute"),
                    "it has none",
                )
            })
    }

    /// The rendered text of the whole page.
    pub fn body_text(&self) -> anyhow::Result<String> {
        self.text("body")
    }

    /// How many elements match `selector` now, without waiting (0 proves an absence, e.g. no
    /// edit button for a viewer).
    pub fn count(&self, selector: &str) -> anyhow::Result<usize> {
        self.command(self.client.find_all(Locator::Css(selector)))
            .map(|elements| elements.len())
            .map_err(|cause| self.failure(format_args!("expected to look for {selector:?}"), cause))
    }

    /// Waits until the page text contains `text`, for at most `timeout`.
    pub fn wait_for_text(&self, text: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self
                .command(async {
                    let body = self.client.find(Locator::Css("body")).await?;
                    body.text().await
                })
                .unwrap_or_default();
            if body.contains(text) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(
                    format_args!("expected the page to show {text:?}"),
                    format_args!("not there after {timeout:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every cookie the browser holds for the current page.
    pub fn cookies(&self) -> anyhow::Result<Vec<Cookie>> {
        let cookies = self
            .command(self.client.get_all_cookies())
            .map_err(|cause| self.failure("expected to read the cookies", cause))?;
        Ok(cookies
            .iter()
            .map(|cookie| Cookie {
                name: cookie.name().to_owned(),
                value: cookie.value().to_owned(),
                path: cookie.path().map(str::to_owned),
                http_only: cookie.http_only().unwrap_or(false),
                secure: cookie.secure().unwrap_or(false),
                same_site: cookie.same_site().map(|s| s.to_string()),
            })
            .collect())
    }

    /// The cookie called `name`, or an error listing the cookies there are.
    pub fn cookie(&self, name: &str) -> anyhow::Result<Cookie> {
        let cookies = self.cookies()?;
        let names: Vec<&str> = cookies.iter().map(|c| c.name.as_str()).collect();
        let found = cookies.iter().find(|c| c.name == name).cloned();
        found.ok_or_else(|| {
            self.failure(
                format_args!("expected a cookie {name:?}"),
                format_args!("the browser holds {names:?}"),
            )
        })
    }

    /// Saves a PNG of the window as `target/test-artifacts/screenshots/NAME.png` and returns its
    /// path. `name` is a file stem: letters, digits, `-` and `_`.
    pub fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("screenshot name {name:?}: use letters, digits, '-' and '_' only");
        }
        let png = self
            .command(self.client.screenshot())
            .map_err(|cause| self.failure(format_args!("expected a screenshot {name}"), cause))?;
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
        // Printed so that the test's output says where to look.
        println!("screenshot: {}", path.display());
        Ok(path)
    }

    /// The element matched by `selector`, waiting up to `self.wait` for it to appear.
    fn element(&self, selector: &str) -> anyhow::Result<Element> {
        self.command(
            self.client
                .wait()
                .at_most(self.wait)
                .every(Duration::from_millis(50))
                .for_element(Locator::Css(selector)),
        )
        .map_err(|cause| {
            self.failure(
                format_args!("expected an element {selector:?} within {:?}", self.wait),
                cause,
            )
        })
    }

    /// Runs one WebDriver exchange on the browser's runtime, with a deadline against a hang.
    fn command<T, E: Display>(
        &self,
        exchange: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        self.bounded(COMMAND_TIMEOUT + self.wait, exchange)
    }

    fn bounded<T, E: Display>(
        &self,
        limit: Duration,
        exchange: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        // The timer is made inside `block_on`: a tokio timer needs the runtime's context.
        match self
            .runtime
            .block_on(async { tokio::time::timeout(limit, exchange).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer from chromedriver within {limit:?}")),
        }
    }

    /// An error naming what was expected, why it failed and where the browser was: the current
    /// URL and the start of the page text.
    fn failure(&self, expected: impl Display, cause: impl Display) -> anyhow::Error {
        let url = self
            .bounded(CONTEXT_TIMEOUT, self.client.current_url())
            .map(|url| url.to_string())
            .unwrap_or_else(|error| format!("(unknown: {error})"));
        let text = self
            .bounded(CONTEXT_TIMEOUT, async {
                let body = self.client.find(Locator::Css("body")).await?;
                body.text().await
            })
            .map(|text| snippet(&text))
            .unwrap_or_else(|error| format!("(unknown: {error})"));
        anyhow!("{expected}: {cause}\n  current URL: {url}\n  page text: {text}")
    }

    /// Chromium's profile and chromedriver's log, for a test that wants to look.
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// chromedriver's process id (its process group holds every Chromium process).
    pub fn driver_pid(&self) -> u32 {
        self.driver.child.id()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver quit Chromium cleanly; the process group kill
        // in `Driver::drop` then catches whatever did not exit.
        let client = self.client.clone();
        let _ = self.bounded(Duration::from_secs(5), client.close());
    }
}

/// `target/test-artifacts/screenshots/`.
pub fn screenshots_dir() -> PathBuf {
    crate::artifacts_dir().join("screenshots")
}

/// chromedriver found on `path`, once Chromium is at `chromium`; else an error that says how to
/// install both (the tests must fail, never skip, where the browser is missing).
fn installed(path: Option<OsString>, chromium: &Path) -> anyhow::Result<PathBuf> {
    let chromedriver = path.and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromedriver"))
            .find(|candidate| candidate.is_file())
    });
    let Some(chromedriver) = chromedriver else {
        bail!("chromedriver is not on PATH: {INSTALL_HINT}");
    };
    if !chromium.is_file() {
        bail!("{} is missing: {INSTALL_HINT}", chromium.display());
    }
    Ok(chromedriver)
}

/// Reads chromedriver's port from its "started successfully on port N" line, then waits until
/// its /status says it is ready for a session.
fn wait_for_port(driver: &mut Driver, log_path: &Path) -> anyhow::Result<u16> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut port = None;
    loop {
        if let Ok(Some(status)) = driver.child.try_wait() {
            bail!(
                "chromedriver exited with {status}:\n{}",
                read_tail(log_path)
            );
        }
        if port.is_none() {
            port = std::fs::read_to_string(log_path)
                .ok()
                .and_then(|log| started_port(&log));
        }
        if let Some(port) = port
            && driver_ready(port)
        {
            return Ok(port);
        }
        if Instant::now() >= deadline {
            bail!(
                "chromedriver was not ready within {START_TIMEOUT:?}:\n{}",
                read_tail(log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn started_port(log: &str) -> Option<u16> {
    log.lines().find_map(|line| {
        line.strip_prefix("ChromeDriver was started successfully on port ")?
            .trim_end_matches('.')
            .parse()
            .ok()
    })
}

/// GET /status over a plain socket: one request before any session, not worth a client.
fn driver_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let Some((_, body)) = response.split_once("\r\n\r\n") else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|status| status["value"]["ready"].as_bool())
        == Some(true)
}

fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The start of `text` on one line, cut at a character boundary.
fn snippet(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= SNIPPET_CHARS {
        return format!("{flat:?}");
    }
    let cut: String = flat.chars().take(SNIPPET_CHARS).collect();
    format!("{cut:?}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_chromedriver_picked() {
        let log = "Starting ChromeDriver 148.0 on port 0\nOnly local connections are allowed.\n\
                   ChromeDriver was started successfully on port 35179.\n";
        assert_eq!(started_port(log), Some(35179));
        assert_eq!(started_port("Starting ChromeDriver\n"), None);
    }

    #[test]
    fn a_missing_browser_says_how_to_install_it() {
        let empty = tempfile::tempdir().expect("temporary directory");
        let path = Some(empty.path().as_os_str().to_owned());
        let error = installed(path, Path::new(CHROMIUM)).expect_err("no chromedriver");
        assert!(
            error.to_string().contains("scripts/install-test-deps"),
            "{error}"
        );

        std::fs::write(empty.path().join("chromedriver"), "").expect("write a stand-in");
        let path = Some(empty.path().as_os_str().to_owned());
        let error = installed(path, &empty.path().join("chromium")).expect_err("no chromium");
        assert!(
            error
                .to_string()
                .contains("chromium is missing: run scripts/install-test-deps"),
            "{error}"
        );
    }

    #[test]
    fn snippet_is_one_bounded_line() {
        assert_eq!(snippet("a\n  b"), "\"a b\"");
        let long = "é".repeat(SNIPPET_CHARS + 10);
        assert_eq!(snippet(&long).chars().count(), SNIPPET_CHARS + 3);
    }
}
