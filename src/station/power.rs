//! Slot power through the rig (SPEC §9 `POWER`): what the station records
//! about it. A power cycle is used twice: to revive a key that stopped
//! answering, and (with `[station] reset_non_blank`) to open the 10-s window
//! in which a YubiKey accepts `authenticatorReset` (SPEC §7 step 2).
//!
//! The store has no typed calls for these yet, so the two queries live here,
//! against its `audit` table (`store/migrations/0001_init.sql`).

use crate::store::{AuditRow, Store, StoreError};
use rusqlite::params;
use std::time::Duration;

/// How long a slot stays unpowered: long enough for a key's supply to
/// drain so its firmware restarts.
pub const POWER_OFF_FOR: Duration = Duration::from_millis(1_000);

/// Audit event for a key reset by the station.
pub const RESET_EVENT: &str = "reset";
/// Audit event for a stuck key power-cycled by the station.
pub const POWER_CYCLE_EVENT: &str = "power-cycle";

/// Whether this station ever stored a result for the key `serial`: such a
/// key is someone's, and is never reset, whatever the policy says.
pub fn programmed_here(store: &Store, serial: &str) -> Result<bool, StoreError> {
    let serial = serial.to_owned();
    store.call(move |conn| {
        let mut stmt =
            conn.prepare("SELECT 1 FROM audit WHERE event = 'programmed' AND serial = ?1 LIMIT 1")?;
        Ok(stmt.exists(params![serial])?)
    })
}

/// Records a power action on a key (`event`: [`RESET_EVENT`] or
/// [`POWER_CYCLE_EVENT`]); `detail` is one line, no secrets.
pub fn record(
    store: &Store,
    event: &'static str,
    slot: &str,
    serial: Option<&str>,
    firmware: Option<&str>,
    detail: &str,
) -> Result<(), StoreError> {
    let (slot, serial, firmware, detail) = (
        slot.to_owned(),
        serial.map(str::to_owned),
        firmware.map(str::to_owned),
        detail.to_owned(),
    );
    store.call(move |conn| {
        conn.execute(
            "INSERT INTO audit (at, shipment_id, event, slot, serial, firmware, detail)
             VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6)",
            params![
                crate::store::now_secs(),
                event,
                slot,
                serial,
                firmware,
                detail
            ],
        )?;
        Ok(())
    })
}

/// Every audit row of `event` (oldest first), for inspection and tests.
pub fn events(store: &Store, event: &str) -> Result<Vec<AuditRow>, StoreError> {
    let event = event.to_owned();
    store.call(move |conn| {
        let mut stmt = conn.prepare(
            "SELECT at, shipment_id, event, slot, serial, firmware, detail FROM audit
             WHERE event = ?1 ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map(params![event], crate::store::audit_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}
