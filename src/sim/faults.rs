//! Scriptable faults of one simulated key (SPEC §10). Indices count from 0:
//! `command` = CTAPHID messages the key has received since it was made,
//! `packet` = reports it has sent.

/// What to break, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Unplug when this incoming message arrives (it is not answered).
    pub unplug_at_command: Option<u64>,
    /// Unplug instead of sending this outgoing report.
    pub unplug_at_packet: Option<u64>,
    /// Outgoing reports that are silently lost.
    pub drop_packets: Vec<u64>,
    /// Outgoing reports that are sent twice.
    pub duplicate_packets: Vec<u64>,
    /// Outgoing reports swapped with the report after them.
    pub reorder_packets: Vec<u64>,
    /// The reply to this incoming message goes out on a wrong channel id.
    pub wrong_channel_at_command: Option<u64>,
    /// Keepalives forever (PROCESSING), never an answer, for every CBOR request.
    pub endless_keepalive: bool,
    /// Touches are ignored (the command times out waiting for user presence).
    pub refuse_touch: bool,
    /// Writes to "flash" fail: setPIN, changePIN, makeCredential, config, reset answer CTAP2_ERR_OTHER.
    pub flash_write_failure: bool,
    /// The credential store reports itself full (KEY_STORE_FULL, remaining 0).
    pub store_full: bool,
    /// The key regenerates its key-agreement key after every PIN check, as a
    /// key that does not keep it for the power session would (issue #16: what
    /// a platform reusing a shared secret must survive).
    pub forget_key_agreement: bool,
}

/// Applies the packet faults of a plan to a stream of outgoing reports.
#[derive(Debug, Default)]
pub(crate) struct PacketFaults {
    pub sent: u64,
    held: Option<crate::transport::Report>,
}

/// What to do with one outgoing report.
pub(crate) enum Emit {
    Send(Vec<crate::transport::Report>),
    Unplug,
}

impl PacketFaults {
    pub fn emit(&mut self, plan: &FaultPlan, report: crate::transport::Report) -> Emit {
        let index = self.sent;
        self.sent += 1;
        if plan.unplug_at_packet == Some(index) {
            return Emit::Unplug;
        }
        if plan.drop_packets.contains(&index) {
            return Emit::Send(Vec::new());
        }
        if plan.reorder_packets.contains(&index) && self.held.is_none() {
            self.held = Some(report);
            return Emit::Send(Vec::new());
        }
        let mut out = vec![report];
        if plan.duplicate_packets.contains(&index) {
            out.push(report);
        }
        if let Some(h) = self.held.take() {
            out.push(h);
        }
        Emit::Send(out)
    }

    /// A held (reorder) report with nothing after it goes out at the end.
    pub fn flush(&mut self) -> Option<crate::transport::Report> {
        self.held.take()
    }
}
