//! Slot power through the rig (SPEC §9 `POWER`): its timing and the audit
//! events it leaves (`Store::record_key_event`). A power cycle is used
//! twice: to revive a key that stopped answering, and (with `[station]
//! reset_non_blank`) to open the 10-s window in which a YubiKey accepts
//! `authenticatorReset` (SPEC §7 step 2).

use std::time::Duration;

/// How long a slot stays unpowered: long enough for a key's supply to
/// drain so its firmware restarts.
pub const POWER_OFF_FOR: Duration = Duration::from_millis(1_000);

/// Audit event for a key reset by the station.
pub const RESET_EVENT: &str = "reset";
/// Audit event for a stuck key power-cycled by the station.
pub const POWER_CYCLE_EVENT: &str = "power-cycle";
