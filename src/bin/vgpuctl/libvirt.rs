//! libvirt, as vgpuctl uses it: the only module that touches the `virt` crate, so that libvirt's
//! C library is linked into vgpuctl alone and never into the hook.
//!
//! Errors come back as one line naming the URI or the domain and what to do: an unreachable
//! daemon, a domain that does not exist (with the defined names closest to the one typed), an
//! operation libvirt refused (with libvirt's own message, without its error-code decoration).

use std::time::Duration;

use vgpu_hook::ctl::guest::agent::Agent;
use vgpu_hook::ctl::guest::GuestError;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::sys;

use crate::error::CtlError;

/// An open connection.
pub struct Libvirt {
    conn: Connect,
    uri: String,
}

/// One domain of the connection.
pub struct Dom {
    dom: Domain,
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
}

/// A defined domain with its definition(s), for "which VFs are already used".
pub struct DomainDefs {
    /// Name.
    pub name: String,
    /// Persistent definition.
    pub inactive: Option<String>,
    /// Running definition, when active.
    pub live: Option<String>,
}

fn refused(what: impl std::fmt::Display, e: &virt::error::Error) -> CtlError {
    CtlError::Libvirt {
        what: what.to_string(),
        message: e.message().trim().to_string(),
        no_domain: e.code().is(ErrorNumber::NoDomain),
    }
}

impl Libvirt {
    /// Connects to `uri`.
    pub fn open(uri: &str) -> Result<Libvirt, CtlError> {
        // libvirt would print every error to stderr itself; vgpuctl prints its own line.
        virt::error::clear_error_callback();
        match Connect::open(Some(uri)) {
            Ok(conn) => Ok(Libvirt {
                conn,
                uri: uri.to_string(),
            }),
            Err(e) => Err(CtlError::Connect {
                uri: uri.to_string(),
                message: e.message().trim().to_string(),
            }),
        }
    }

    /// The URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The daemon's libvirt version (`major * 1_000_000 + minor * 1000 + micro`).
    pub fn version(&self) -> Result<u32, CtlError> {
        self.conn
            .lib_version()
            .map_err(|e| refused(format!("libvirt at {}", self.uri), &e))
    }

    /// The hypervisor's version as libvirt reports it (QEMU's, for a `qemu://` URI), in the
    /// same encoding as [`Libvirt::version`].
    pub fn hypervisor_version(&self) -> Result<u32, CtlError> {
        self.conn
            .hyp_version()
            .map_err(|e| refused(format!("the hypervisor at {}", self.uri), &e))
    }

    /// The host's name as its libvirt says it.
    pub fn hostname(&self) -> Result<String, CtlError> {
        self.conn
            .hostname()
            .map_err(|e| refused(format!("the host name at {}", self.uri), &e))
    }

    /// The XML of every node device that offers mdev types (mdev parents: PCI GPUs and their
    /// VFs, and others such as mtty).
    pub fn mdev_parent_xmls(&self) -> Result<Vec<String>, CtlError> {
        let what = || format!("the node devices at {}", self.uri);
        let devices = self
            .conn
            .list_all_node_devices(sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV_TYPES)
            .map_err(|e| refused(what(), &e))?;
        devices
            .iter()
            .map(|d| d.xml_desc(0).map_err(|e| refused(what(), &e)))
            .collect()
    }

    fn wrap(&self, dom: Domain) -> Result<Dom, CtlError> {
        let name = dom
            .name()
            .map_err(|e| refused(format!("domain at {}", self.uri), &e))?;
        let uuid = dom
            .uuid_string()
            .map_err(|e| refused(format!("domain '{name}'"), &e))?;
        Ok(Dom { dom, name, uuid })
    }

    /// Every domain's name.
    pub fn domain_names(&self) -> Result<Vec<String>, CtlError> {
        let doms = self
            .conn
            .list_all_domains(0)
            .map_err(|e| refused(format!("listing domains at {}", self.uri), &e))?;
        Ok(doms.iter().filter_map(|d| d.name().ok()).collect())
    }

    /// The domain with this name (or UUID); unknown names get the closest defined ones.
    pub fn lookup(&self, name: &str) -> Result<Dom, CtlError> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => return self.wrap(d),
            Err(e) if !e.code().is(ErrorNumber::NoDomain) => {
                return Err(refused(format!("domain '{name}' at {}", self.uri), &e))
            }
            Err(_) => {}
        }
        if name.len() == 36 {
            if let Ok(d) = self.conn.lookup_domain_by_uuid_string(name) {
                return self.wrap(d);
            }
        }
        let names = self.domain_names().unwrap_or_default();
        let close = vgpu_hook::ctl::similar::close_names(name, &names, 5);
        let hint = if !close.is_empty() {
            format!(
                "did you mean {}?",
                close
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if names.is_empty() {
            "no domains are defined there".to_string()
        } else {
            "virsh list --all shows the defined ones".to_string()
        };
        Err(CtlError::NotFound(format!(
            "domain '{}' not found at {} ({hint})",
            vgpu_hook::printable(name, 80),
            self.uri
        )))
    }

    /// Defines (replaces) a persistent definition.
    pub fn define(&self, name: &str, xml: &str) -> Result<(), CtlError> {
        self.conn.define_domain_xml(xml).map(|_| ()).map_err(|e| {
            refused(
                format!("libvirt refused the new definition of '{name}'"),
                &e,
            )
        })
    }

    /// Every defined or running domain with its definitions.
    pub fn all_definitions(&self) -> Result<Vec<DomainDefs>, CtlError> {
        let doms = self
            .conn
            .list_all_domains(0)
            .map_err(|e| refused(format!("listing domains at {}", self.uri), &e))?;
        let mut out = Vec::new();
        for d in doms {
            let Ok(name) = d.name() else { continue };
            let inactive = d.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE).ok();
            let live = if d.is_active().unwrap_or(false) {
                d.xml_desc(0).ok()
            } else {
                None
            };
            out.push(DomainDefs {
                name,
                inactive,
                live,
            });
        }
        Ok(out)
    }
}

impl Dom {
    /// The persistent definition.
    pub fn inactive_xml(&self) -> Result<String, CtlError> {
        self.dom
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| refused(format!("domain '{}'", self.name), &e))
    }

    /// The running definition.
    pub fn live_xml(&self) -> Result<String, CtlError> {
        self.dom
            .xml_desc(0)
            .map_err(|e| refused(format!("domain '{}'", self.name), &e))
    }

    /// Whether it runs.
    pub fn is_active(&self) -> Result<bool, CtlError> {
        self.dom
            .is_active()
            .map_err(|e| refused(format!("domain '{}'", self.name), &e))
    }

    /// Hot-plugs a device into the running domain and its persistent definition.
    pub fn attach_live_and_config(&self, device_xml: &str) -> Result<(), CtlError> {
        self.dom
            .attach_device_flags(
                device_xml,
                sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG,
            )
            .map_err(|e| refused(format!("hot-plug into '{}'", self.name), &e))
    }

    /// Unplugs a device from the running domain only.
    pub fn detach_live(&self, device_xml: &str) -> Result<(), CtlError> {
        self.dom
            .detach_device_flags(device_xml, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| refused(format!("unplug from '{}'", self.name), &e))
    }

    /// Unplugs a device from the running domain and its persistent definition.
    pub fn detach_live_and_config(&self, device_xml: &str) -> Result<(), CtlError> {
        self.dom
            .detach_device_flags(
                device_xml,
                sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG,
            )
            .map_err(|e| refused(format!("unplug from '{}'", self.name), &e))
    }

    /// Replaces our metadata element of the running domain (`None` removes it).
    pub fn set_live_metadata(&self, element: Option<&str>) -> Result<(), CtlError> {
        self.dom
            .set_metadata(
                sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                element,
                element.map(|_| "vgpu"),
                Some(vgpu_hook::model::domain::NAMESPACE),
                sys::VIR_DOMAIN_AFFECT_LIVE,
            )
            .map_err(|e| refused(format!("metadata of running '{}'", self.name), &e))
    }
}

impl Dom {
    /// libvirt's state, as `virsh domstate` names it.
    pub fn state_name(&self) -> Result<&'static str, CtlError> {
        let (state, _) = self
            .dom
            .state()
            .map_err(|e| refused(format!("domain '{}'", self.name), &e))?;
        Ok(match state {
            Enum::Known(DomainState::Running) => "running",
            Enum::Known(DomainState::Paused) => "paused",
            Enum::Known(DomainState::Blocked) => "blocked",
            Enum::Known(DomainState::Shutdown) => "in shutdown",
            Enum::Known(DomainState::Shutoff) => "shut off",
            Enum::Known(DomainState::Crashed) => "crashed",
            Enum::Known(DomainState::PMSuspended) => "pmsuspended",
            _ => "no state",
        })
    }
}

/// The guest agent, reached through libvirt (`virDomainQemuAgentCommand`); libvirt's errors
/// become the [`GuestError`] that says what is missing.
impl Agent for Dom {
    fn call(
        &self,
        command: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, GuestError> {
        let secs = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let reply = self
            .dom
            .qemu_agent_command(&command.to_string(), secs, 0)
            .map_err(|e| {
                let m = e.message().trim().to_string();
                match e.code() {
                    c if c.is(ErrorNumber::ArgumentUnsupported) => GuestError::NoChannel(m),
                    c if c.is(ErrorNumber::AgentUnresponsive) => GuestError::NotConnected(m),
                    c if c.is(ErrorNumber::AgentCommandTimeout) => GuestError::Timeout(m),
                    c if c.is(ErrorNumber::OperationInvalid) => GuestError::NotRunning,
                    _ => GuestError::CommandFailed(m),
                }
            })?;
        let mut v: serde_json::Value = serde_json::from_str(&reply)
            .map_err(|e| GuestError::Protocol(format!("reply is not JSON: {e}")))?;
        match v.get_mut("return") {
            Some(r) => Ok(r.take()),
            None => Err(GuestError::Protocol(format!(
                "reply without return: {}",
                vgpu_hook::printable(&reply, 200)
            ))),
        }
    }
}
