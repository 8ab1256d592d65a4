//! Deciding and doing: what the configured GPUs offer right now, which GPU a request goes to, and
//! (in the hook's per-call modules) creating and claiming devices all or nothing.

pub mod inventory;
pub mod placement;
