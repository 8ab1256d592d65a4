//! Deciding and doing: what the configured GPUs offer right now ([`inventory`]), which GPU a
//! request goes to ([`placement`]; on a mixed-size GPU which slot, [`slots`] and [`mixed`]), and
//! making it so: mdevs created ([`mdev`]), VFs claimed and
//! typed ([`vf`]), each step written into a transaction ([`txn`]) that a refusal undoes.

pub mod inventory;
pub mod mdev;
pub mod mixed;
pub mod numa;
pub mod placement;
pub mod refusal;
pub mod slots;
pub mod txn;
pub mod vf;

use crate::host::drains::{Drain, Drains};
use crate::host::state::{now_secs, Device, Liveness, Record, State};
use crate::host::sysfs::Sysfs;
use crate::host::Host;
use crate::model::config::Config;
use crate::model::domain::Domain;
use crate::model::scheduler::Scheduler;
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
    /// The host NUMA nodes the domain wants, if it says.
    pub numa: Option<&'a numa::Wanted>,
    /// The GPUs the operator drained: no new vGPU goes there.
    pub drains: &'a Drains,
}

impl Ctx<'_> {
    /// The host's sysfs.
    pub fn sysfs(&self) -> &Sysfs {
        &self.host.sysfs
    }

    /// Records `device` as this domain's, from now: a record kept from an earlier run whose
    /// release never came (a daemon crash) starts its grace again, because this start has not
    /// reached QEMU yet either.
    pub fn record(
        &mut self,
        device: Device,
        parent: String,
        type_id: Option<String>,
        created: bool,
    ) {
        let since = now_secs();
        self.state.put(Record {
            domain_uuid: self.dom.uuid.clone(),
            domain_name: self.dom.name.clone(),
            device,
            parent,
            type_id,
            since,
            created,
            numa_note: None,
        });
    }

    /// Notes on the record of `device` that it is off the VM's NUMA nodes (on `node`), because
    /// nothing on them had room when the VM started; logged too.
    pub fn note_remote(&mut self, device: &Device, node: Option<u32>) {
        let Some(wanted) = &self.numa else {
            return;
        };
        let at = node.map_or_else(
            || "an unknown NUMA node".to_string(),
            |n| format!("NUMA node {n}"),
        );
        let note = format!(
            "on {at}, not the VM's node {}: no room there at start",
            wanted.label()
        );
        log::warn!("domain '{}': {device} is {note}", self.dom.name);
        if let Some(r) = self.state.records.iter_mut().find(|r| &r.device == device) {
            r.numa_note = Some(note);
        }
    }

    /// A running domain that uses `device` without our record of it (its live definition names
    /// it), other than this one: such a device is never reused or claimed.
    pub fn user_without_record(&self, device: &Device) -> Option<String> {
        crate::host::running::user_of(
            &self.host.libvirt_run_dir,
            self.live,
            device,
            &self.dom.uuid,
        )
    }

    /// When the domain asks for a vGPU scheduling policy that the GPU does not run: what it runs
    /// (`None`: not an NVIDIA vGPU GPU of the config, or the `nvidia` module's parameters
    /// unreadable) and what the domain asks. The one rule for mdevs and VFs.
    pub fn scheduler_mismatch(
        &self,
        pf: Option<crate::model::pci::PciAddress>,
    ) -> Option<(Option<Scheduler>, Scheduler)> {
        let wants = self.dom.scheduler?;
        let runs = pf
            .filter(|p| self.config.nvidia_vgpu_pfs.contains(p))
            .and_then(|p| self.sysfs().running_scheduler(p));
        (!runs.is_some_and(|r| r.serves(wants))).then_some((runs, wants))
    }

    /// The drain of the GPU `gpu` (as the config names it), if the operator drained it.
    pub fn drained(&self, gpu: &str) -> Option<&Drain> {
        self.drains.of(gpu)
    }

    /// The other domain holding a device, if any.
    pub fn other_owner(&self, device: &Device) -> Option<String> {
        self.state
            .holder(device, self.live)
            .filter(|r| r.domain_uuid != self.dom.uuid)
            .map(|r| r.domain_name.clone())
    }
}
