//! Simulated slots (`sim:PROFILE`). Placeholder until the simulator lands.
use super::source::{KeySource, SourceError};
#[derive(Debug)]
pub struct SimSource;
impl SimSource {
    pub fn new(profile: &str, _slot: usize, _seed: u64) -> Result<Self, SourceError> {
        Err(SourceError(format!(
            "sim:{profile}: simulator not in this build"
        )))
    }
}
impl KeySource for SimSource {
    fn connect(&mut self) -> Option<Box<dyn crate::transport::Transport>> {
        None
    }
}
