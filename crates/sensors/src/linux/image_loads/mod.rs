//! (stub: being written)

use crate::{Sensor, SensorContext, SensorError, SensorState};

pub struct ImageLoadSensor {}

impl ImageLoadSensor {
    pub fn from_config(_config: &watchpost_config::Config) -> ImageLoadSensor {
        ImageLoadSensor {}
    }
}

impl Sensor for ImageLoadSensor {
    fn name(&self) -> &'static str {
        "image_loads"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["win_image_load_events", "win_image_load_process_map"]
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
