//! (stub: being written)

use crate::{Sensor, SensorContext, SensorError, SensorState};

pub struct NetworkSensor {}

impl NetworkSensor {
    pub fn from_config(_config: &watchpost_config::Config) -> NetworkSensor {
        NetworkSensor {}
    }
}

impl Sensor for NetworkSensor {
    fn name(&self) -> &'static str {
        "network"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["win_socket_events", "win_dns_events", "win_dns_response_events", "win_http_events"]
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
