//! A scripted [`CtapDevice`] for unit tests: records requests, plays replies.

use super::{CtapDevice, CtapError};
use crate::cbor::{self, Value};
use crate::ctaphid::KeepaliveStatus;
use std::collections::VecDeque;

type Responder = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

#[derive(Default)]
pub struct ScriptedDevice {
    pub requests: Vec<Vec<u8>>,
    pub replies: VecDeque<Vec<u8>>,
    pub keepalives: Vec<KeepaliveStatus>,
    /// Answers requests once `replies` is empty.
    pub responder: Option<Responder>,
}

impl std::fmt::Debug for ScriptedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScriptedDevice({} requests)", self.requests.len())
    }
}

impl ScriptedDevice {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a success reply with `body` (or an empty one).
    pub fn ok(mut self, body: Option<Value>) -> Self {
        let mut r = vec![0];
        if let Some(b) = body {
            r.extend(cbor::encode(&b));
        }
        self.replies.push_back(r);
        self
    }

    /// Answers with `f(request)` when no queued reply is left.
    pub fn responder(mut self, f: impl FnMut(&[u8]) -> Vec<u8> + 'static) -> Self {
        self.responder = Some(Box::new(f));
        self
    }

    pub fn raw(mut self, reply: Vec<u8>) -> Self {
        self.replies.push_back(reply);
        self
    }

    /// Decoded parameters of the n-th request (after its command byte).
    pub fn params(&self, n: usize) -> Value {
        cbor::decode(&self.requests[n][1..]).unwrap()
    }
}

impl CtapDevice for ScriptedDevice {
    fn cbor(
        &mut self,
        request: &[u8],
        keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, CtapError> {
        self.requests.push(request.to_vec());
        for k in &self.keepalives {
            keepalive(*k);
        }
        if let Some(r) = self.replies.pop_front() {
            return Ok(r);
        }
        let f = self.responder.as_mut().expect("a scripted reply");
        Ok(f(request))
    }
}
