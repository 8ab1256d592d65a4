//! The config check: everything else depends on it, so it comes first and says how to get a
//! valid one (a missing config is written by `vgpuctl install`; an invalid one names its line).

use super::{Context, Verdict};
use crate::model::config::{Config, ConfigError};

/// Whether the config loads, and whether it lists any device at all.
pub fn config(ctx: &Context<'_>) -> Vec<Verdict> {
    let path = &ctx.config_path;
    match &ctx.config {
        Ok(c) => {
            let mut out = vec![Verdict::ok(format!("{path} is valid: {}", summary(c)))];
            if is_empty(c) {
                out.push(Verdict::warn(
                    "the config lists no devices, so every vGPU request will be refused",
                    format!(
                        "uncomment or add devices in {path} (vgpuctl install lists what this host has)"
                    ),
                ));
            }
            out
        }
        Err(e @ ConfigError::Missing { .. }) => vec![Verdict::fail(
            e.to_string(),
            "vgpuctl install (writes a commented skeleton)",
        )],
        Err(e) => vec![Verdict::fail(
            e.to_string(),
            format!("edit {path} as the message says"),
        )],
    }
}

fn summary(c: &Config) -> String {
    let n = |k: usize, what: &str| format!("{k} {what}");
    format!(
        "{}, {}, {}, {}",
        n(c.nvidia_vgpu_pfs.len(), "NVIDIA GPU(s)"),
        n(c.amd_vgpu_pfs.len(), "AMD PF(s)"),
        n(c.mdev_parents.len(), "other mdev parent(s)"),
        n(c.sriov_pfs.len(), "other SR-IOV PF(s)")
    )
}

fn is_empty(c: &Config) -> bool {
    c.nvidia_vgpu_pfs.is_empty()
        && c.amd_vgpu_pfs.is_empty()
        && c.mdev_parents.is_empty()
        && c.sriov_pfs.is_empty()
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixture;
    use super::super::Severity;
    use super::*;

    #[test]
    fn a_missing_config_fails_with_install_as_the_fix() {
        let f = Fixture::new();
        let v = f.check(config);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].severity, Severity::Error);
        assert_eq!(
            v[0].fix.as_deref(),
            Some("vgpuctl install (writes a commented skeleton)")
        );
    }

    #[test]
    fn a_config_without_devices_is_valid_but_warned_about() {
        let f = Fixture::new();
        f.write_config("placement = \"pack\"\n");
        let v = f.check(config);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].severity, Severity::Ok);
        assert!(v[0].message.ends_with("is valid: 0 NVIDIA GPU(s), 0 AMD PF(s), 0 other mdev parent(s), 0 other SR-IOV PF(s)"), "{}", v[0].message);
        assert_eq!(v[1].severity, Severity::Warning);
    }

    #[test]
    fn an_invalid_config_says_to_edit_it() {
        let f = Fixture::new();
        f.write_config("placement = 3\n");
        let v = f.check(config);
        assert_eq!(v[0].severity, Severity::Error);
        assert!(v[0].fix.as_deref().unwrap().starts_with("edit "), "{v:?}");
    }
}
