//! YARA scanning behind `win_yara_events` (stub: being written).

use std::path::{Path, PathBuf};

use crate::{Sensor, SensorContext, SensorError, SensorState};

/// A file the file sensor saw created or modified (closed after writing) under a YARA
/// category's paths, to be scanned off the event path.
#[derive(Clone, Debug)]
pub struct ScanRequest {
    pub path: PathBuf,
    /// Acting process, when known.
    pub pid: Option<u32>,
    /// `FILE Created` or `FILE Modified`: the `action` of the row.
    pub action: &'static str,
}

/// The handle the file sensor uses to feed the YARA scanner. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct YaraQueue {}

impl YaraQueue {
    /// Whether `path` is under some category's `file_paths` (so it should be submitted).
    pub fn wants(&self, _path: &Path) -> bool {
        false
    }

    /// Queues a file for scanning; false when the queue is full (the scanner counts it lost).
    pub fn submit(&self, _request: ScanRequest) -> bool {
        false
    }

    /// The folders the YARA config covers, so the file sensor marks their filesystems.
    pub fn roots(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

pub struct YaraSensor {}

impl YaraSensor {
    pub fn from_config(_config: &watchpost_config::Config) -> YaraSensor {
        YaraSensor {}
    }

    /// The handle the file sensor feeds.
    pub fn queue(&self) -> YaraQueue {
        YaraQueue::default()
    }
}

impl Sensor for YaraSensor {
    fn name(&self) -> &'static str {
        "yara"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["win_yara_events"]
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        ctx.health.set_state(SensorState::Failed("not implemented yet".into()));
        Ok(())
    }

    fn reconfigure(&mut self, _config: &watchpost_config::Config) -> Result<(), SensorError> {
        Ok(())
    }

    fn stop(&mut self) {}
}
