//! Inventory of a macOS host: `sw_vers`, `uname`, `scutil`, `sysctl` and `ioreg`.

use super::{Fact, InventoryFacts, command_line, command_stdout, hardware_value};
use crate::host::Host;

const IOREG_ARGS: &[&str] = &["-rd1", "-c", "IOPlatformExpertDevice"];

pub(super) async fn collect(host: &Host, facts: &mut InventoryFacts) {
    match command_stdout(host, "sw_vers", &[]).await {
        Ok(text) => {
            let sw = parse_sw_vers(&text);
            let missing = |key: &str| format!("{key} not in the output of `sw_vers`");
            facts.set(
                Fact::OsName,
                sw.product_name.ok_or_else(|| missing("ProductName")),
            );
            let version = sw.product_version.map(|v| match sw.product_version_extra {
                Some(extra) => format!("{v} {extra}"),
                None => v,
            });
            facts.set(
                Fact::OsVersion,
                version.ok_or_else(|| missing("ProductVersion")),
            );
            facts.set(
                Fact::OsBuild,
                sw.build_version.ok_or_else(|| missing("BuildVersion")),
            );
        }
        Err(reason) => {
            for fact in [Fact::OsName, Fact::OsVersion, Fact::OsBuild] {
                facts.unreadable(fact, reason.clone());
            }
        }
    }

    facts.set(
        Fact::KernelVersion,
        command_line(host, "uname", &["-r"]).await,
    );
    facts.set(
        Fact::Architecture,
        command_line(host, "uname", &["-m"]).await,
    );

    let hostname = match command_line(host, "scutil", &["--get", "ComputerName"]).await {
        Ok(name) => Ok(name),
        Err(first) => command_line(host, "hostname", &[])
            .await
            .map_err(|second| format!("{first}; {second}")),
    };
    facts.set(Fact::Hostname, hostname);

    let boot_time = command_stdout(host, "sysctl", &["-n", "kern.boottime"])
        .await
        .and_then(|text| {
            parse_kern_boottime(&text)
                .ok_or_else(|| format!("unexpected output of `sysctl -n kern.boottime`: {text:?}"))
        });
    facts.set_boot_time(boot_time);

    match command_stdout(host, "ioreg", IOREG_ARGS).await {
        Ok(text) => {
            let platform = parse_ioreg_platform(&text);
            let source = "`ioreg -rd1 -c IOPlatformExpertDevice`";
            let missing = |key: &str| format!("{key} not in the output of {source}");
            let checked = |value: Option<String>, key: &str| match value {
                Some(value) => hardware_value(&value, &format!("{key} of {source}")),
                None => Err(missing(key)),
            };
            facts.set(
                Fact::HardwareVendor,
                checked(platform.manufacturer, "manufacturer"),
            );
            facts.set(Fact::HardwareModel, checked(platform.model, "model"));
            facts.set(
                Fact::HardwareSerial,
                checked(platform.serial_number, "IOPlatformSerialNumber"),
            );
            facts.set(
                Fact::MachineId,
                platform.uuid.ok_or_else(|| missing("IOPlatformUUID")),
            );
        }
        Err(reason) => {
            for fact in [
                Fact::HardwareVendor,
                Fact::HardwareModel,
                Fact::HardwareSerial,
                Fact::MachineId,
            ] {
                facts.unreadable(fact, reason.clone());
            }
        }
    }
}

/// The fields of `sw_vers` output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SwVers {
    pub product_name: Option<String>,
    pub product_version: Option<String>,
    /// The Rapid Security Response suffix, e.g. `(a)`, on macOS 13 and later.
    pub product_version_extra: Option<String>,
    pub build_version: Option<String>,
}

/// Parses `sw_vers` output: `Key:<tabs>value` lines.
pub fn parse_sw_vers(text: &str) -> SwVers {
    let mut sw = SwVers::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let slot = match key.trim() {
            "ProductName" => &mut sw.product_name,
            "ProductVersion" => &mut sw.product_version,
            "ProductVersionExtra" => &mut sw.product_version_extra,
            "BuildVersion" => &mut sw.build_version,
            _ => continue,
        };
        *slot = Some(value.to_owned());
    }
    sw
}

/// Parses `sysctl -n kern.boottime`, e.g. `{ sec = 1700000000, usec = 123456 } Tue Nov 14
/// 22:13:20 2023`, into milliseconds since the epoch.
pub fn parse_kern_boottime(text: &str) -> Option<i64> {
    let inner = text.trim().strip_prefix('{')?.split_once('}')?.0;
    let mut sec = None;
    let mut usec = None;
    for part in inner.split(',') {
        let (key, value) = part.split_once('=')?;
        let value: i64 = value.trim().parse().ok()?;
        match key.trim() {
            "sec" => sec = Some(value),
            "usec" => usec = Some(value),
            _ => {}
        }
    }
    sec?.checked_mul(1000)?
        .checked_add(usec.unwrap_or(0) / 1000)
}

/// The fields of the `IOPlatformExpertDevice` registry entry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IoregPlatform {
    pub serial_number: Option<String>,
    pub uuid: Option<String>,
    pub model: Option<String>,
    pub manufacturer: Option<String>,
}

/// Parses `ioreg -rd1 -c IOPlatformExpertDevice` output: `"key" = value` lines, where a value is
/// a string `"..."`, quoted data `<"...">`, or hex data `<4d6163...00>` (NUL-terminated).
pub fn parse_ioreg_platform(text: &str) -> IoregPlatform {
    let mut platform = IoregPlatform::default();
    for line in text.lines() {
        let Some((key, value)) = ioreg_property(line) else {
            continue;
        };
        let slot = match key {
            "IOPlatformSerialNumber" => &mut platform.serial_number,
            "IOPlatformUUID" => &mut platform.uuid,
            "model" => &mut platform.model,
            "manufacturer" => &mut platform.manufacturer,
            _ => continue,
        };
        if let Some(value) = value {
            *slot = Some(value);
        }
    }
    platform
}

/// One `"key" = value` line; the value is `None` when it is not text.
fn ioreg_property(line: &str) -> Option<(&str, Option<String>)> {
    let line = line.trim().trim_start_matches(['|', ' ']);
    let rest = line.strip_prefix('"')?;
    let (key, rest) = rest.split_once('"')?;
    let value = rest.trim_start().strip_prefix('=')?.trim();
    Some((key, ioreg_text(value)))
}

fn ioreg_text(value: &str) -> Option<String> {
    if let Some(data) = value.strip_prefix('<').and_then(|v| v.strip_suffix('>')) {
        if let Some(quoted) = data.strip_prefix('"') {
            // Quoted data may list several strings: <"J314sAP","MacBookPro18,3">; take the first.
            return Some(quoted.split_once('"')?.0.to_owned());
        }
        let bytes = hex::decode(data).ok()?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = std::str::from_utf8(&bytes[..end]).ok()?;
        return Some(text.to_owned());
    }
    let quoted = value.strip_prefix('"')?.strip_suffix('"')?;
    Some(quoted.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/src/checks/inventory/testdata/macos/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).expect("fixture exists")
    }

    #[test]
    fn sw_vers_sonoma() {
        assert_eq!(
            parse_sw_vers(&fixture("sw_vers-14.1.1")),
            SwVers {
                product_name: Some("macOS".to_owned()),
                product_version: Some("14.1.1".to_owned()),
                product_version_extra: None,
                build_version: Some("23B81".to_owned()),
            }
        );
    }

    #[test]
    fn sw_vers_catalina_says_mac_os_x() {
        let sw = parse_sw_vers(&fixture("sw_vers-10.15.7"));
        assert_eq!(sw.product_name.as_deref(), Some("Mac OS X"));
        assert_eq!(sw.product_version.as_deref(), Some("10.15.7"));
        assert_eq!(sw.build_version.as_deref(), Some("19H2026"));
    }

    #[test]
    fn sw_vers_with_a_rapid_security_response() {
        let sw = parse_sw_vers(&fixture("sw_vers-13.4.1-rsr"));
        assert_eq!(sw.product_version.as_deref(), Some("13.4.1"));
        assert_eq!(sw.product_version_extra.as_deref(), Some("(c)"));
        assert_eq!(sw.build_version.as_deref(), Some("22F770820d"));
    }

    #[test]
    fn kern_boottime() {
        assert_eq!(
            parse_kern_boottime(&fixture("sysctl-kern.boottime")),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_kern_boottime("{ sec = 5, usec = 0 }"), Some(5000));
        assert_eq!(parse_kern_boottime("kern.boottime: unknown"), None);
        assert_eq!(parse_kern_boottime("{ sec = x, usec = 0 }"), None);
    }

    #[test]
    fn ioreg_apple_silicon() {
        assert_eq!(
            parse_ioreg_platform(&fixture("ioreg-macbookpro17-1")),
            IoregPlatform {
                serial_number: Some("A01BC3QFQ05D".to_owned()),
                uuid: Some("1AB2345C-03E4-57D4-A375-1234D48DE123".to_owned()),
                model: Some("MacBookPro17,1".to_owned()),
                manufacturer: Some("Apple Inc.".to_owned()),
            }
        );
    }

    #[test]
    fn ioreg_intel() {
        let platform = parse_ioreg_platform(&fixture("ioreg-macbookpro15-1"));
        assert_eq!(platform.model.as_deref(), Some("MacBookPro15,1"));
        assert_eq!(platform.serial_number.as_deref(), Some("C02XG2JMJG5H"));
        assert_eq!(platform.manufacturer.as_deref(), Some("Apple Inc."));
        assert_eq!(
            platform.uuid.as_deref(),
            Some("5E4A3C2B-1D0F-5A9B-8C7D-6E5F4A3B2C1D")
        );
    }

    #[test]
    fn ioreg_hex_data_is_decoded_up_to_the_nul() {
        let line = r#"      "model" = <4d6163426f6f6b50726f31382c3300>"#;
        assert_eq!(
            ioreg_property(line),
            Some(("model", Some("MacBookPro18,3".to_owned())))
        );
        assert_eq!(
            ioreg_property(r#"      "IOBusyInterest" = "IOCommand is not serializable""#),
            Some((
                "IOBusyInterest",
                Some("IOCommand is not serializable".to_owned())
            ))
        );
        assert_eq!(
            ioreg_property("+-o J293AP  <class IOPlatformExpertDevice>"),
            None
        );
    }
}
