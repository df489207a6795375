//! (stub: being written)

use crate::{Sensor, SensorContext, SensorError, SensorState};

pub struct FileSensor {}

impl FileSensor {
    pub fn from_config(_config: &watchpost_config::Config, _yara: super::yara::YaraQueue) -> FileSensor {
        FileSensor {}
    }
}

impl Sensor for FileSensor {
    fn name(&self) -> &'static str {
        "files"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["win_file_events", "win_file_timestomp_events", "win_pefile_events"]
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
