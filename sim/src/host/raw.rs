//! The host file exactly as written, before any default or check.
//!
//! serde refuses unknown keys here (`deny_unknown_fields`), so a misspelt key fails with its
//! name; everything else (which keys a kind may use, what a value must look like) is decided
//! by the validators, which need to know whether a key was given at all. Keeping the raw form
//! separate lets them tell "absent" from "default" and name the key in every message.

use serde::Deserialize;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub(super) modules: Option<Vec<String>>,
    pub(super) vfio_pci_enable_sriov: Option<bool>,
    pub(super) nvidia_version: Option<String>,
    pub(super) nvidia_registry_dwords: Option<String>,
    pub(super) nvidia_registry_dwords_per_device: Option<String>,
    #[serde(default)]
    pub(super) node: Vec<RawNode>,
    #[serde(default)]
    pub(super) gpu: Vec<RawGpu>,
}

/// One `[[node]]` table: a NUMA node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) id: u32,
    pub(super) cpus: String,
    pub(super) distance: Vec<u32>,
}

/// One `[[gpu]]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGpu {
    pub(super) kind: Option<String>,
    pub(super) address: Option<String>,
    pub(super) name: Option<String>,
    pub(super) board: Option<String>,
    pub(super) name_prefix: Option<String>,
    pub(super) framebuffer_mb: Option<u64>,
    pub(super) types: Option<Vec<RawType>>,
    pub(super) self_cleanup_ms: Option<u64>,
    pub(super) remove_blocks: Option<bool>,
    pub(super) appear_after_ms: Option<u64>,
    pub(super) numvfs: Option<u16>,
    pub(super) totalvfs: Option<u16>,
    pub(super) sriov_configurable: Option<bool>,
    pub(super) reset_busy_ms: Option<u64>,
    pub(super) exit_timeout_ms: Option<u64>,
    pub(super) available: Option<String>,
    pub(super) pool: Option<u32>,
    pub(super) gim: Option<String>,
    pub(super) compute_partition: Option<String>,
    pub(super) memory_partition: Option<String>,
    pub(super) generation: Option<String>,
    pub(super) vf_offset: Option<u16>,
    pub(super) vf_stride: Option<u16>,
    pub(super) vendor: Option<toml::Value>,
    pub(super) device: Option<toml::Value>,
    pub(super) vf_device: Option<toml::Value>,
    pub(super) class: Option<toml::Value>,
    pub(super) numa_node: Option<i32>,
    pub(super) iommu_group: Option<u32>,
    pub(super) driver: Option<String>,
    pub(super) vf_driver: Option<String>,
}

/// One entry of a `types = [...]` list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawType {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) device_api: Option<String>,
    pub(super) framebuffer_mb: Option<u64>,
    pub(super) max_instances: Option<u32>,
    pub(super) units: Option<u32>,
}

/// A PCI id or class: an integer, or a hex string like `"0x10de"`, at most `max`.
pub(super) fn number(key: &str, v: &Option<toml::Value>, max: u64) -> Result<Option<u64>, String> {
    let Some(v) = v else { return Ok(None) };
    let n = match v {
        toml::Value::Integer(i) => u64::try_from(*i).ok(),
        toml::Value::String(s) => {
            let t = s.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => None,
            }
        }
        _ => None,
    };
    match n {
        Some(n) if n <= max => Ok(Some(n)),
        _ => Err(format!(
            "{key}: expected a hex string like \"0x{max:x}\" or an integer up to {max}, got {v}"
        )),
    }
}
