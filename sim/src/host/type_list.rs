//! The types a `[[gpu]]` offers: an explicit list, a derived NVIDIA board list, or the mtty
//! sample's two.
//!
//! Most host files name a board and let [`crate::profiles`] derive its list; a few spell out
//! their types; the mtty sample needs neither. Each way has its own checks (an explicit NVIDIA
//! type needs its framebuffer, a board needs a size in whole GiB), and derived lists of
//! different boards in one host must not share invented ids, which only the whole file can
//! tell. This module holds all of that, so that validating a GPU is one call per concern.

use std::collections::{BTreeMap, BTreeSet};

use super::gpu::{Entry, MTTY_PORTS};
use super::raw::{RawGpu, RawType};
use super::{Gpu, Kind};
use crate::profiles::{self, IdStyle};
use crate::typespec::TypeSpec;

impl Entry<'_> {
    /// The entry's types: its explicit list, else its kind's default.
    pub(super) fn types(&self) -> Result<Vec<TypeSpec>, String> {
        match &self.raw.types {
            Some(raw) => self.explicit_types(raw),
            None => self.default_types(),
        }
    }

    /// Types of an entry without a list: an NVIDIA board's, the mtty sample's, or none.
    fn default_types(&self) -> Result<Vec<TypeSpec>, String> {
        match self.kind {
            k if k.is_nvidia() => self.derive_types(None),
            Kind::Mdev if self.raw.name.as_deref() == Some("mtty") => Ok(mtty_types()),
            Kind::Mdev => Err(format!(
                "{}: missing; kind \"mdev\" needs a list like [{{ id = \"mtty-1\", name = \"Single port serial\", max_instances = 24 }}]",
                self.key("types")
            )),
            _ => Ok(Vec::new()),
        }
    }

    /// An explicit list: it replaces the board keys, is not empty and names no type twice.
    fn explicit_types(&self, raw: &[RawType]) -> Result<Vec<TypeSpec>, String> {
        let g = self.raw;
        if g.framebuffer_mb.is_some() || g.board.is_some() || g.name_prefix.is_some() {
            return Err(format!(
                "{}: an explicit type list replaces board, name_prefix and framebuffer_mb; give one or the other",
                self.key("types")
            ));
        }
        if raw.is_empty() {
            return Err(format!("{}: expected at least one type", self.key("types")));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (j, t) in raw.iter().enumerate() {
            self.check_type_id(j, t)?;
            if !seen.insert(t.id.clone()) {
                return Err(format!(
                    "{}: {:?} is listed twice",
                    self.type_key(j, "id"),
                    t.id
                ));
            }
            out.push(self.explicit_type(j, t)?);
        }
        Ok(out)
    }

    /// The full name of key `k` of type `j` (`gpu[0].types[2].units`).
    fn type_key(&self, j: usize, k: &str) -> String {
        format!("gpu[{}].types[{j}].{k}", self.index)
    }

    /// A type id is a non-zero number on kernel-6.8+ NVIDIA, a directory name elsewhere.
    fn check_type_id(&self, j: usize, t: &RawType) -> Result<(), String> {
        let (ok, want) = if self.kind == Kind::NvidiaVfio {
            (
                !t.id.is_empty() && t.id.bytes().all(|b| b.is_ascii_digit()) && t.id != "0",
                "a non-zero number like \"1145\"",
            )
        } else {
            (
                !t.id.is_empty()
                    && t.id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
                "a directory name like \"nvidia-46\" or \"mtty-2\"",
            )
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{}: expected {want}, got {:?}",
                self.type_key(j, "id"),
                t.id
            ))
        }
    }

    /// One explicit type with its defaults; NVIDIA types need a name and a framebuffer size.
    fn explicit_type(&self, j: usize, t: &RawType) -> Result<TypeSpec, String> {
        if self.kind.is_nvidia() && t.framebuffer_mb.is_none() {
            return Err(format!(
                "{}: missing; NVIDIA types need their framebuffer size (MiB) for the one-size rule",
                self.type_key(j, "framebuffer_mb")
            ));
        }
        if self.kind.is_nvidia() && t.name.is_none() {
            return Err(format!(
                "{}: missing; NVIDIA types need a name like \"GRID P40-1Q\"",
                self.type_key(j, "name")
            ));
        }
        if t.framebuffer_mb == Some(0) {
            return Err(format!(
                "{}: expected more than 0",
                self.type_key(j, "framebuffer_mb")
            ));
        }
        let units = t.units.unwrap_or(1);
        if units == 0 {
            return Err(format!(
                "{}: expected at least 1, got 0",
                self.type_key(j, "units")
            ));
        }
        let max_instances = match (t.max_instances, self.raw.pool) {
            (Some(m), _) => m,
            (None, Some(pool)) => pool / units,
            (None, None) => {
                return Err(format!(
                    "{}: missing; expected how many instances fit on an empty parent",
                    self.type_key(j, "max_instances")
                ))
            }
        };
        Ok(TypeSpec {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            device_api: t
                .device_api
                .clone()
                .unwrap_or_else(|| "vfio-pci".to_string()),
            framebuffer_mb: t.framebuffer_mb,
            max_instances,
            units,
        })
    }

    /// The board name and framebuffer (GB) of a derived NVIDIA list.
    fn board_and_size(&self) -> Result<(&str, u64), String> {
        let g = self.raw;
        let board = g.board.as_deref().ok_or_else(|| {
            format!(
                "{}: missing; expected a board name like \"P40\" (or an explicit types list)",
                self.key("board")
            )
        })?;
        if board.is_empty() || board.trim() != board || board.contains(char::is_control) {
            return Err(format!(
                "{}: expected a board name like \"A10\" or \"RTX Pro 6000 Blackwell DC\", got {board:?}",
                self.key("board")
            ));
        }
        let fb = g
            .framebuffer_mb
            .or_else(|| profiles::board_framebuffer_mb(board))
            .ok_or_else(|| {
                format!(
                    "{}: missing; {board:?} is not a known board, give its framebuffer in MiB like 24576",
                    self.key("framebuffer_mb")
                )
            })?;
        if fb == 0 || fb % 1024 != 0 || fb > 1024 * 1024 {
            return Err(format!(
                "{}: expected a whole number of GiB in MiB (a multiple of 1024 up to 1048576), got {fb}",
                self.key("framebuffer_mb")
            ));
        }
        Ok((board, fb / 1024))
    }

    /// Derives an NVIDIA board's list, with invented ids from `base` (default: the board's own).
    fn derive_types(&self, base: Option<u32>) -> Result<Vec<TypeSpec>, String> {
        let (board, gb) = self.board_and_size()?;
        let prefix = self
            .raw
            .name_prefix
            .clone()
            .unwrap_or_else(|| profiles::board_prefix(board).to_string());
        let style = if self.kind == Kind::NvidiaVfio {
            IdStyle::Numeric
        } else {
            IdStyle::Mdev
        };
        let base = base.unwrap_or_else(|| profiles::board_base(board));
        Ok(profiles::derive(board, &prefix, gb, base, style))
    }
}

/// The mtty sample's types (samples/vfio-mdev/mtty.c): 1 and 2 ports per device.
fn mtty_types() -> Vec<TypeSpec> {
    [
        ("mtty-1", "Single port serial", 1),
        ("mtty-2", "Dual port serial", 2),
    ]
    .into_iter()
    .map(|(id, name, units)| TypeSpec {
        id: id.to_string(),
        name: Some(name.to_string()),
        description: None,
        device_api: "vfio-pci".to_string(),
        framebuffer_mb: None,
        max_instances: MTTY_PORTS / units,
        units,
    })
    .collect()
}

/// Moves derived id ranges of different boards apart so no two boards in one host share an id.
pub(super) fn assign_distinct_bases(raw: &[RawGpu], gpus: &mut [Gpu]) {
    // (board, framebuffer GB, style) -> base; ranges already taken.
    let mut bases: BTreeMap<(String, u64, bool), u32> = BTreeMap::new();
    let mut taken: Vec<(u32, u32, String)> = Vec::new();
    for (i, (g, r)) in gpus.iter_mut().zip(raw).enumerate() {
        if !g.kind.is_nvidia() || r.types.is_some() {
            continue;
        }
        let e = Entry {
            index: i,
            kind: g.kind,
            raw: r,
        };
        let Ok((board, gb)) = e.board_and_size() else {
            continue;
        };
        if profiles::has_real_ids(board, gb) {
            continue;
        }
        let numeric = g.kind == Kind::NvidiaVfio;
        let key = (board.to_ascii_uppercase(), gb, numeric);
        let count = profiles::derived_count(board, gb);
        let base = if let Some(&b) = bases.get(&key) {
            b
        } else {
            let mut b = profiles::board_base(board);
            while taken
                .iter()
                .any(|(s, e, other)| *other != key.0 && b < *e && *s < b + count)
            {
                b += profiles::BASE_STEP;
            }
            bases.insert(key.clone(), b);
            taken.push((b, b + count, key.0.clone()));
            b
        };
        if base != profiles::board_base(board) {
            if let Ok(types) = e.derive_types(Some(base)) {
                g.types = types;
            }
        }
    }
}
