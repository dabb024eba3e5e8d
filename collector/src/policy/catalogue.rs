//! Control catalogues: the frameworks rules map to, shipped as data (`catalogue/*.toml`), so no
//! standard is wired into code.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Every catalogue the collector ships with.
const BUILTIN: &[(&str, &str)] = &[
    (
        "catalogue/iso27001-2022.toml",
        include_str!("catalogue/iso27001-2022.toml"),
    ),
    (
        "catalogue/cis-controls-v8.toml",
        include_str!("catalogue/cis-controls-v8.toml"),
    ),
];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    pub id: String,
    pub title: String,
    #[serde(rename = "control")]
    pub controls: Vec<Control>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub id: String,
    pub title: String,
    pub theme: String,
}

#[derive(Debug)]
pub struct Catalogue {
    /// By framework id, in file order.
    frameworks: Vec<Framework>,
}

impl Catalogue {
    /// The shipped catalogues, parsed once.
    pub fn builtin() -> Result<&'static Catalogue, String> {
        static CATALOGUE: OnceLock<Result<Catalogue, String>> = OnceLock::new();
        CATALOGUE
            .get_or_init(|| {
                let mut frameworks = Vec::new();
                for (name, text) in BUILTIN {
                    let framework: Framework = toml::from_str(text)
                        .map_err(|e| format!("shipped control catalogue {name}: {e}"))?;
                    frameworks.push(framework);
                }
                Ok(Catalogue { frameworks })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn frameworks(&self) -> &[Framework] {
        &self.frameworks
    }

    /// Finds `framework:control`, e.g. `iso27001-2022:A.8.8`.
    pub fn control(&self, reference: &str) -> Result<(&Framework, &Control), String> {
        let (framework_id, control_id) = reference.split_once(':').ok_or_else(|| {
            format!(
                "{reference:?} names no framework: write FRAMEWORK:CONTROL, e.g. iso27001-2022:A.8.8"
            )
        })?;
        let framework = self
            .frameworks
            .iter()
            .find(|f| f.id == framework_id)
            .ok_or_else(|| {
                format!(
                    "unknown framework {framework_id:?}: the catalogue has {}",
                    self.frameworks
                        .iter()
                        .map(|f| f.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let control = framework
            .controls
            .iter()
            .find(|c| c.id == control_id)
            .ok_or_else(|| format!("{framework_id} has no control {control_id:?}"))?;
        Ok((framework, control))
    }

    /// Position of a control in its framework, for listing controls in the standard's order.
    pub fn order(&self, reference: &str) -> (usize, usize) {
        let Some((framework_id, control_id)) = reference.split_once(':') else {
            return (usize::MAX, usize::MAX);
        };
        let index: BTreeMap<&str, usize> = self
            .frameworks
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.as_str(), i))
            .collect();
        let f = index.get(framework_id).copied().unwrap_or(usize::MAX);
        let c = self
            .frameworks
            .get(f)
            .and_then(|fw| fw.controls.iter().position(|c| c.id == control_id))
            .unwrap_or(usize::MAX);
        (f, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogues_parse_and_hold_the_controls_the_checks_serve() {
        let catalogue = Catalogue::builtin().expect("shipped catalogues parse");
        for reference in [
            "iso27001-2022:A.5.9",
            "iso27001-2022:A.8.1",
            "iso27001-2022:A.8.8",
            "iso27001-2022:A.8.13",
            "iso27001-2022:A.8.16",
            "iso27001-2022:A.8.24",
            "iso27001-2022:10.2",
            "cis-controls-v8:1.1",
            "cis-controls-v8:3.6",
            "cis-controls-v8:7.3",
            "cis-controls-v8:11.2",
        ] {
            catalogue.control(reference).expect(reference);
        }
        let iso = &catalogue.frameworks()[0];
        assert_eq!(
            iso.controls
                .iter()
                .filter(|c| c.id.starts_with("A."))
                .count(),
            93,
            "ISO/IEC 27001:2022 Annex A has 93 controls"
        );
        for framework in catalogue.frameworks() {
            let mut ids: Vec<&str> = framework.controls.iter().map(|c| c.id.as_str()).collect();
            let before = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(
                ids.len(),
                before,
                "{}: control ids are unique",
                framework.id
            );
        }
    }

    #[test]
    fn a_wrong_reference_says_what_exists() {
        let catalogue = Catalogue::builtin().expect("catalogue");
        let no_framework = catalogue.control("A.8.8").expect_err("no framework");
        assert!(
            no_framework.contains("iso27001-2022:A.8.8"),
            "{no_framework}"
        );
        let unknown = catalogue.control("iso27001:A.8.8").expect_err("unknown");
        assert!(unknown.contains("iso27001-2022"), "{unknown}");
        let missing = catalogue
            .control("iso27001-2022:A.9.9")
            .expect_err("missing");
        assert!(missing.contains("A.9.9"), "{missing}");
    }
}
