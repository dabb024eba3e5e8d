//! Inventory of a Windows host: one PowerShell call that prints CIM classes and the registry's
//! `MachineGuid` as JSON.
//!
//! This module is compiled on every OS and reached by the host's recorded OS family, so Windows
//! recordings replay (and are tested) on Linux.

use serde_json::Value;

use super::{Fact, InventoryFacts, command_stdout, hardware_value};
use crate::checks::powershell::{parse_cim_datetime, text_of};
use crate::host::Host;

pub(super) use crate::checks::powershell::POWERSHELL;

/// Each part is queried on its own, so that one failing query (a broken WMI class, a locked
/// registry key) leaves the others readable and says why in `<Part>Error`.
/// `PROCESSOR_ARCHITEW6432` is set when a 32-bit PowerShell runs on 64-bit Windows.
pub(super) const SCRIPT: &str = r#"$ErrorActionPreference = 'Stop'
$r = [ordered]@{}
try { $r.OperatingSystem = Get-CimInstance -ClassName Win32_OperatingSystem | Select-Object Caption, Version, BuildNumber, OSArchitecture, LastBootUpTime } catch { $r.OperatingSystemError = "$_" }
try { $r.ComputerSystem = Get-CimInstance -ClassName Win32_ComputerSystem | Select-Object Name, DNSHostName, Manufacturer, Model } catch { $r.ComputerSystemError = "$_" }
try { $r.Bios = Get-CimInstance -ClassName Win32_BIOS | Select-Object SerialNumber } catch { $r.BiosError = "$_" }
try { $r.MachineGuid = (Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Cryptography' -Name MachineGuid).MachineGuid } catch { $r.MachineGuidError = "$_" }
$r.ProcessorArchitecture = if ($env:PROCESSOR_ARCHITEW6432) { $env:PROCESSOR_ARCHITEW6432 } else { $env:PROCESSOR_ARCHITECTURE }
[pscustomobject]$r | ConvertTo-Json -Depth 4"#;

pub(super) const ARGS: &[&str] = &["-NoProfile", "-NonInteractive", "-Command", SCRIPT];

pub(super) async fn collect(host: &Host, facts: &mut InventoryFacts) {
    let parsed = command_stdout(host, POWERSHELL, ARGS)
        .await
        .and_then(|text| parse_inventory_json(&text));
    let report = match parsed {
        Ok(report) => report,
        Err(reason) => {
            for fact in Fact::ALL {
                facts.unreadable(fact, reason.clone());
            }
            return;
        }
    };
    let source = "the PowerShell inventory";
    let take = |value: &Option<String>, part: &Option<String>, key: &str| match (value, part) {
        (Some(value), _) => Ok(value.clone()),
        (None, Some(error)) => Err(error.clone()),
        (None, None) => Err(format!("{key} not in {source}")),
    };
    let os = &report.os_error;
    let cs = &report.computer_system_error;
    facts.set(
        Fact::Hostname,
        take(&report.dns_host_name, cs, "DNSHostName").or_else(|_| take(&report.name, cs, "Name")),
    );
    facts.set(Fact::OsName, take(&report.caption, os, "Caption"));
    facts.set(Fact::OsVersion, take(&report.version, os, "Version"));
    facts.set(Fact::OsBuild, take(&report.build_number, os, "BuildNumber"));
    // The NT kernel carries the OS version number; there is no separate kernel release.
    facts.set(Fact::KernelVersion, take(&report.version, os, "Version"));
    facts.set(
        Fact::Architecture,
        take(
            &report.processor_architecture,
            &None,
            "ProcessorArchitecture",
        )
        .or_else(|_| take(&report.os_architecture, os, "OSArchitecture")),
    );
    facts.set(
        Fact::MachineId,
        take(
            &report.machine_guid,
            &report.machine_guid_error,
            "MachineGuid",
        ),
    );
    let hardware = |value: &Option<String>, part: &Option<String>, key: &str, class: &str| {
        take(value, part, key).and_then(|v| hardware_value(&v, &format!("{class}.{key}")))
    };
    facts.set(
        Fact::HardwareVendor,
        hardware(
            &report.manufacturer,
            cs,
            "Manufacturer",
            "Win32_ComputerSystem",
        ),
    );
    facts.set(
        Fact::HardwareModel,
        hardware(&report.model, cs, "Model", "Win32_ComputerSystem"),
    );
    facts.set(
        Fact::HardwareSerial,
        hardware(
            &report.serial_number,
            &report.bios_error,
            "SerialNumber",
            "Win32_BIOS",
        ),
    );
    let boot = take(&report.last_boot_up_time, os, "LastBootUpTime").and_then(|raw| {
        parse_cim_datetime(&raw).ok_or_else(|| format!("unexpected LastBootUpTime {raw:?}"))
    });
    facts.set_boot_time(boot);
}

/// What the PowerShell script printed. A part that failed has its error message instead.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WindowsReport {
    pub caption: Option<String>,
    pub version: Option<String>,
    pub build_number: Option<String>,
    pub os_architecture: Option<String>,
    /// Raw: `/Date(ms)/` (PowerShell 5), an ISO 8601 string (PowerShell 7), or the `value` of a
    /// `{ value, DisplayHint, DateTime }` object.
    pub last_boot_up_time: Option<String>,
    pub os_error: Option<String>,
    pub name: Option<String>,
    pub dns_host_name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub computer_system_error: Option<String>,
    pub serial_number: Option<String>,
    pub bios_error: Option<String>,
    pub machine_guid: Option<String>,
    pub machine_guid_error: Option<String>,
    pub processor_architecture: Option<String>,
}

/// Parses the script's JSON (see [`SCRIPT`]). A part may be an object or, on odd machines, an
/// array of objects: the first is used. Blank strings count as absent.
pub fn parse_inventory_json(text: &str) -> Result<WindowsReport, String> {
    let text = text.trim_start_matches('\u{feff}').trim();
    let root: Value = serde_json::from_str(text)
        .map_err(|error| format!("the PowerShell inventory is not JSON: {error}"))?;
    if !root.is_object() {
        return Err("the PowerShell inventory is not a JSON object".to_owned());
    }
    let os = part(&root, "OperatingSystem");
    let cs = part(&root, "ComputerSystem");
    let bios = part(&root, "Bios");
    let error = |key: &str, class: &str| {
        text_of(root.get(key)).map(|message| format!("{class} query failed: {message}"))
    };
    Ok(WindowsReport {
        caption: text_of(os.get("Caption")),
        version: text_of(os.get("Version")),
        build_number: text_of(os.get("BuildNumber")),
        os_architecture: text_of(os.get("OSArchitecture")),
        last_boot_up_time: text_of(
            os.get("LastBootUpTime")
                .map(|v| v.get("value").unwrap_or(v)),
        ),
        os_error: error("OperatingSystemError", "Win32_OperatingSystem"),
        name: text_of(cs.get("Name")),
        dns_host_name: text_of(cs.get("DNSHostName")),
        manufacturer: text_of(cs.get("Manufacturer")),
        model: text_of(cs.get("Model")),
        computer_system_error: error("ComputerSystemError", "Win32_ComputerSystem"),
        serial_number: text_of(bios.get("SerialNumber")),
        bios_error: error("BiosError", "Win32_BIOS"),
        machine_guid: text_of(root.get("MachineGuid")),
        machine_guid_error: error("MachineGuidError", "MachineGuid registry value"),
        processor_architecture: text_of(root.get("ProcessorArchitecture")),
    })
}

fn part<'a>(root: &'a Value, key: &str) -> &'a Value {
    match root.get(key) {
        Some(Value::Array(items)) => items.first().unwrap_or(&Value::Null),
        Some(value) => value,
        None => &Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/src/checks/inventory/testdata/windows/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).expect("fixture exists")
    }

    #[test]
    fn powershell_5_json() {
        let report = parse_inventory_json(&fixture("inventory-ps5.json")).expect("parses");
        assert_eq!(
            report,
            WindowsReport {
                caption: Some("Microsoft Windows 11 Pro".to_owned()),
                version: Some("10.0.22631".to_owned()),
                build_number: Some("22631".to_owned()),
                os_architecture: Some("64-bit".to_owned()),
                last_boot_up_time: Some("/Date(1700032400500)/".to_owned()),
                name: Some("DESKTOP-7K3J2QF".to_owned()),
                dns_host_name: Some("DESKTOP-7K3J2QF".to_owned()),
                manufacturer: Some("Dell Inc.".to_owned()),
                model: Some("Latitude 7440".to_owned()),
                serial_number: Some("7XK2QZ3".to_owned()),
                machine_guid: Some("b7e3f2a1-4c5d-4e6f-8a9b-0c1d2e3f4a5b".to_owned()),
                processor_architecture: Some("AMD64".to_owned()),
                ..WindowsReport::default()
            }
        );
    }

    #[test]
    fn powershell_7_json_with_a_failed_part() {
        let report =
            parse_inventory_json(&fixture("inventory-ps7-bios-error.json")).expect("parses");
        assert_eq!(
            report.caption.as_deref(),
            Some("Microsoft Windows Server 2022 Datacenter")
        );
        assert_eq!(
            report.last_boot_up_time.as_deref(),
            Some("2023-11-14T23:13:20.5+01:00")
        );
        assert_eq!(report.serial_number, None);
        assert_eq!(
            report.bios_error.as_deref(),
            Some("Win32_BIOS query failed: Access denied")
        );
        assert_eq!(report.manufacturer.as_deref(), Some("VMware, Inc."));
    }

    #[test]
    fn not_json_is_a_reason() {
        let error =
            parse_inventory_json("Get-CimInstance : Invalid class\r\n").expect_err("not json");
        assert!(error.contains("not JSON"), "{error}");
        assert!(parse_inventory_json("[]").is_err());
    }
}
