//! Deciding and doing: what the configured GPUs offer right now ([`inventory`]), which GPU a
//! request goes to ([`placement`]), and making it so: mdevs created ([`mdev`]), VFs claimed and
//! typed ([`vf`]), each step written into a transaction ([`txn`]) that a refusal undoes.

pub mod inventory;
pub mod mdev;
pub mod placement;
pub mod refusal;
pub mod txn;
pub mod vf;

use crate::host::state::{now_secs, Device, Liveness, Record, State};
use crate::host::sysfs::Sysfs;
use crate::host::Host;
use crate::model::config::Config;
use crate::model::domain::Domain;
use refusal::Refusal;
use txn::Txn;

/// A refusal while allocating, and whether waiting may help (a configured device may still
/// appear while the host boots).
#[derive(Debug)]
pub struct Failure {
    /// Why.
    pub reason: Refusal,
    /// Whether a retry within `parent_wait_secs` may succeed.
    pub waitable: bool,
}

impl From<Refusal> for Failure {
    fn from(reason: Refusal) -> Self {
        Failure {
            reason,
            waitable: false,
        }
    }
}

/// Everything one `prepare` allocates with: the host, who runs, the config, the domain, the
/// state it records into and the transaction that can undo it.
pub struct Ctx<'a> {
    /// The host's paths.
    pub host: &'a Host,
    /// Who runs now.
    pub live: &'a Liveness,
    /// The config.
    pub config: &'a Config,
    /// The domain being prepared.
    pub dom: &'a Domain,
    /// The ownership records, changed in memory and saved by the caller on success.
    pub state: &'a mut State,
    /// What this call did so far.
    pub txn: &'a mut Txn,
}

impl Ctx<'_> {
    /// The host's sysfs.
    pub fn sysfs(&self) -> &Sysfs {
        &self.host.sysfs
    }

    /// Records `device` as this domain's.
    pub fn record(
        &mut self,
        device: Device,
        parent: String,
        type_id: Option<String>,
        created: bool,
    ) {
        let since = self.state.owner(&device).map_or_else(now_secs, |r| r.since);
        self.state.put(Record {
            domain_uuid: self.dom.uuid.clone(),
            domain_name: self.dom.name.clone(),
            device,
            parent,
            type_id,
            since,
            created,
        });
    }

    /// The other domain holding a device, if any.
    pub fn other_owner(&self, device: &Device) -> Option<String> {
        self.state
            .holder(device, self.live)
            .filter(|r| r.domain_uuid != self.dom.uuid)
            .map(|r| r.domain_name.clone())
    }
}
