//! Inventory of a Linux host: files under `/proc`, `/sys` and `/etc`, and `uname -m`.

use std::collections::BTreeMap;

use super::{Fact, InventoryFacts, command_line, hardware_value, parse_line};
use crate::host::Host;

const HOSTNAME: &str = "/proc/sys/kernel/hostname";
const OS_RELEASE: &str = "/etc/os-release";
const OS_RELEASE_FALLBACK: &str = "/usr/lib/os-release";
const KERNEL_RELEASE: &str = "/proc/sys/kernel/osrelease";
const MACHINE_ID: &str = "/etc/machine-id";
const DMI_VENDOR: &str = "/sys/class/dmi/id/sys_vendor";
const DMI_PRODUCT: &str = "/sys/class/dmi/id/product_name";
const DMI_SERIAL: &str = "/sys/class/dmi/id/product_serial";
const PROC_STAT: &str = "/proc/stat";

pub(super) async fn collect(host: &Host, facts: &mut InventoryFacts) {
    facts.set(Fact::Hostname, read_line(host, HOSTNAME).await);

    match read_os_release(host).await {
        Ok((path, text)) => {
            let release = parse_os_release(&text);
            let missing = |keys: &str| format!("{keys} not set in {path}");
            facts.set(
                Fact::OsName,
                release.get("NAME").cloned().ok_or_else(|| missing("NAME")),
            );
            facts.set(
                Fact::OsVersion,
                release
                    .get("VERSION")
                    .or_else(|| release.get("VERSION_ID"))
                    .cloned()
                    .ok_or_else(|| missing("VERSION and VERSION_ID")),
            );
            facts.set(
                Fact::OsBuild,
                release
                    .get("BUILD_ID")
                    .cloned()
                    .ok_or_else(|| missing("BUILD_ID")),
            );
        }
        Err(reason) => {
            for fact in [Fact::OsName, Fact::OsVersion, Fact::OsBuild] {
                facts.unreadable(fact, reason.clone());
            }
        }
    }

    facts.set(Fact::KernelVersion, read_line(host, KERNEL_RELEASE).await);
    facts.set(
        Fact::Architecture,
        command_line(host, "uname", &["-m"]).await,
    );

    let machine_id = match host.read_file(MACHINE_ID).await {
        Ok(text) => parse_machine_id(&text).map_err(|reason| format!("{reason} in {MACHINE_ID}")),
        Err(error) => Err(error.to_string()),
    };
    facts.set(Fact::MachineId, machine_id);

    for (fact, path) in [
        (Fact::HardwareVendor, DMI_VENDOR),
        (Fact::HardwareModel, DMI_PRODUCT),
        (Fact::HardwareSerial, DMI_SERIAL),
    ] {
        let value = match host.read_file(path).await {
            Ok(text) => hardware_value(&text, path),
            Err(error) => Err(error.to_string()),
        };
        facts.set(fact, value);
    }

    let boot_time = match host.read_file(PROC_STAT).await {
        Ok(text) => parse_proc_stat_btime(&text).ok_or_else(|| format!("no btime in {PROC_STAT}")),
        Err(error) => Err(error.to_string()),
    };
    facts.set_boot_time(boot_time);
}

async fn read_line(host: &Host, path: &str) -> Result<String, String> {
    let text = host
        .read_file(path)
        .await
        .map_err(|error| error.to_string())?;
    parse_line(&text).ok_or_else(|| format!("{path} is empty"))
}

/// `/etc/os-release`, or `/usr/lib/os-release` when that cannot be read (os-release(5)).
async fn read_os_release(host: &Host) -> Result<(&'static str, String), String> {
    let first = match host.read_file(OS_RELEASE).await {
        Ok(text) => return Ok((OS_RELEASE, text)),
        Err(error) => error,
    };
    match host.read_file(OS_RELEASE_FALLBACK).await {
        Ok(text) => Ok((OS_RELEASE_FALLBACK, text)),
        Err(second) => Err(format!("{first}; {second}")),
    }
}

/// Parses os-release(5): `KEY=value` lines, `#` comments and blank lines ignored, values
/// unquoted and unescaped as in a shell assignment (single quotes literal; in double quotes a
/// backslash escapes `$`, `"`, `\` and `` ` ``; outside quotes it escapes any character).
/// Lines that are not assignments are skipped.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let valid_key = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if !valid_key {
            continue;
        }
        if let Some(value) = shell_unquote(raw) {
            map.insert(key.to_owned(), value);
        }
    }
    map
}

/// Undoes shell quoting of one word; `None` when a quote is left open.
fn shell_unquote(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        c @ ('$' | '"' | '\\' | '`') => out.push(c),
                        c => {
                            out.push('\\');
                            out.push(c);
                        }
                    },
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            // An unquoted blank ends the word; whatever follows (e.g. a comment) is not part of
            // the value.
            c if c.is_whitespace() => break,
            c => out.push(c),
        }
    }
    Some(out)
}

/// `/etc/machine-id`: 32 lowercase hexadecimal characters (machine-id(5)). `uninitialized` (a
/// first boot in progress) and anything else that is not an id are reasons, not ids.
pub fn parse_machine_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if id.is_empty() {
        return Err("empty machine id".to_owned());
    }
    if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        if id.chars().all(|c| c == '0') {
            return Err(format!("placeholder value {id:?}"));
        }
        return Ok(id.to_ascii_lowercase());
    }
    Err(format!("not a machine id: {id:?}"))
}

/// The boot time from `/proc/stat` (`btime SECONDS`, proc(5)), in milliseconds since the epoch.
pub fn parse_proc_stat_btime(text: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("btime")?;
        let secs: i64 = rest.trim().parse().ok()?;
        secs.checked_mul(1000)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/src/checks/inventory/testdata/linux/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).expect("fixture exists")
    }

    fn fields(text: &str) -> (Option<String>, Option<String>, Option<String>) {
        let map = parse_os_release(text);
        (
            map.get("NAME").cloned(),
            map.get("VERSION")
                .or_else(|| map.get("VERSION_ID"))
                .cloned(),
            map.get("BUILD_ID").cloned(),
        )
    }

    #[test]
    fn os_release_debian_12() {
        let map = parse_os_release(&fixture("os-release-debian-12"));
        assert_eq!(map["NAME"], "Debian GNU/Linux");
        assert_eq!(map["VERSION"], "12 (bookworm)");
        assert_eq!(map["VERSION_ID"], "12");
        assert_eq!(map["ID"], "debian");
        assert_eq!(map["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(map.get("BUILD_ID"), None);
    }

    #[test]
    fn os_release_ubuntu_22_04() {
        let (name, version, build) = fields(&fixture("os-release-ubuntu-22.04"));
        assert_eq!(name.as_deref(), Some("Ubuntu"));
        assert_eq!(version.as_deref(), Some("22.04.3 LTS (Jammy Jellyfish)"));
        assert_eq!(build, None);
    }

    #[test]
    fn os_release_rocky_9() {
        let map = parse_os_release(&fixture("os-release-rocky-9"));
        assert_eq!(map["NAME"], "Rocky Linux");
        assert_eq!(map["VERSION"], "9.3 (Blue Onyx)");
        assert_eq!(map["ID_LIKE"], "rhel centos fedora");
        assert_eq!(map["CPE_NAME"], "cpe:/o:rocky:rocky:9::baseos");
    }

    #[test]
    fn os_release_alpine_has_no_version_so_version_id_serves() {
        let (name, version, _) = fields(&fixture("os-release-alpine-3.19"));
        assert_eq!(name.as_deref(), Some("Alpine Linux"));
        assert_eq!(version.as_deref(), Some("3.19.1"));
    }

    #[test]
    fn os_release_arch_has_a_build_id() {
        let (name, version, build) = fields(&fixture("os-release-arch"));
        assert_eq!(name.as_deref(), Some("Arch Linux"));
        assert_eq!(version.as_deref(), Some("20230611.0.157136"));
        assert_eq!(build.as_deref(), Some("rolling"));
    }

    #[test]
    fn os_release_quoting_and_escapes_follow_the_shell() {
        let text = concat!(
            "# a comment\n",
            "\n",
            "NAME='Single $quoted'\n",
            "PRETTY_NAME=\"Say \\\"hi\\\" \\$HOME \\\\ \\n\"\n",
            "VERSION=bare\\ word\n",
            "ID=x # trailing comment\n",
            "BROKEN=\"never closed\n",
            "not an assignment\n",
            "1BAD=key\n",
        );
        let map = parse_os_release(text);
        assert_eq!(map["NAME"], "Single $quoted");
        assert_eq!(map["PRETTY_NAME"], "Say \"hi\" $HOME \\ \\n");
        assert_eq!(map["VERSION"], "bare word");
        assert_eq!(map["ID"], "x");
        assert_eq!(map.get("BROKEN"), None);
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn machine_id() {
        assert_eq!(
            parse_machine_id(&fixture("machine-id")),
            Ok("3d1219c7c4c5404aaa1f6d2a48adfda4".to_owned())
        );
        assert!(
            parse_machine_id("uninitialized\n")
                .expect_err("not an id")
                .contains("uninitialized")
        );
        assert!(parse_machine_id("\n").is_err());
        assert!(parse_machine_id(&"0".repeat(32)).is_err());
    }

    #[test]
    fn proc_stat_btime() {
        assert_eq!(
            parse_proc_stat_btime(&fixture("proc-stat")),
            Some(1_795_440_727_000)
        );
        assert_eq!(parse_proc_stat_btime("cpu  1 2 3\nintr 5\n"), None);
        assert_eq!(parse_proc_stat_btime("btime nonsense\n"), None);
    }
}
