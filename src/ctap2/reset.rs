//! authenticatorReset (0x07, CTAP 2.1 §6.6) and authenticatorSelection
//! (0x0B, §6.9): both wait for a touch.

use super::{Client, CtapCommand, CtapDevice, CtapError};
use crate::ctaphid::KeepaliveStatus;

impl<D: CtapDevice> Client<D> {
    /// Wipes credentials and PIN. Only within ~10 s of power-up (NOT_ALLOWED
    /// otherwise) and with a touch (ACTION_TIMEOUT without one).
    pub fn reset(&mut self, keepalive: &mut dyn FnMut(KeepaliveStatus)) -> Result<(), CtapError> {
        self.call(CtapCommand::RESET, None, keepalive).map(drop)
    }

    /// Asks the user to pick this authenticator by touching it.
    pub fn selection(
        &mut self,
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<(), CtapError> {
        self.call(CtapCommand::SELECTION, None, keepalive).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_device::ScriptedDevice;
    use super::super::StatusCode;
    use super::*;

    #[test]
    fn reset_and_selection() {
        let mut c = Client::new(ScriptedDevice::new().ok(None).raw(vec![0x30]).ok(None));
        c.reset(&mut |_| {}).unwrap();
        assert_eq!(
            c.reset(&mut |_| {}).unwrap_err().status(),
            Some(StatusCode::NOT_ALLOWED)
        );
        c.selection(&mut |_| {}).unwrap();
        assert_eq!(
            c.device().requests,
            vec![vec![0x07], vec![0x07], vec![0x0b]]
        );
    }
}
