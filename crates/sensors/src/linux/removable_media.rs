//! The `removable_media` sensor behind `win_removable_media_events` on Linux: kernel uevents
//! from a `NETLINK_KOBJECT_UEVENT` socket (multicast group 1, the kernel's own; group 2 is
//! udev's and silent without udevd), decoded and mapped as [`crate::common::uevent`] documents.
//!
//! `uid` and `pid` stay NULL: a kernel uevent does not say which process or user caused it.
//! Events lost to a full socket buffer (`ENOBUFS`) are counted in the health's `lost` figure
//! (as one: the kernel does not say how many). The socket is opened in [`Sensor::start`], so a
//! missing netlink family fails the start; health mode `netlink`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use watchpost_catalog::{Event, Table};

use super::sensor_thread::SensorThread;
use crate::common::uevent::{MediaOptions, Uevent, is_trusted, media_action, parse_uevent};
use crate::{Sensor, SensorContext, SensorError, SensorState, catalog_table, column_index};

const TABLE: &str = "win_removable_media_events";
const TABLES: &[&str] = &[TABLE];
const NAME: &str = "removable_media";
/// The kernel's uevent multicast group.
const KERNEL_GROUP: u32 = 1;
/// Kernel messages are at most a few KiB; netlink datagrams never exceed this.
const MAX_MESSAGE: usize = 64 * 1024;
/// How often the thread looks at the stop flag while no event comes.
const RECEIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

/// The removable media sensor.
pub struct RemovableMediaSensor {
    options: MediaOptions,
    /// `watchpost.removable_media_loop_devices`, shared with the thread so a reload applies it.
    report_loop_devices: Arc<AtomicBool>,
    running: Option<SensorThread>,
}

impl Default for RemovableMediaSensor {
    fn default() -> RemovableMediaSensor {
        RemovableMediaSensor::with_options(MediaOptions::default())
    }
}

impl RemovableMediaSensor {
    /// A sensor set up by the config's `watchpost.removable_media_loop_devices`.
    pub fn from_config(config: &watchpost_config::Config) -> RemovableMediaSensor {
        RemovableMediaSensor::with_options(MediaOptions {
            report_loop_devices: config.sensor_options.removable_media_loop_devices,
            accept_synthetic: false,
        })
    }

    /// A sensor with test switches (see [`MediaOptions`]).
    pub fn with_options(options: MediaOptions) -> RemovableMediaSensor {
        let report_loop_devices = Arc::new(AtomicBool::new(options.report_loop_devices));
        RemovableMediaSensor { options, report_loop_devices, running: None }
    }
}

/// Opens the uevent socket bound to the kernel's group.
fn open_socket() -> std::io::Result<OwnedFd> {
    // A burst of device events (a hub with many disks) must not overflow the default buffer.
    super::netlink::open_socket(libc::NETLINK_KOBJECT_UEVENT, KERNEL_GROUP, 4 * 1024 * 1024, RECEIVE_TIMEOUT)
}

/// One datagram and the netlink port of its sender (0: the kernel).
fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> std::io::Result<(usize, u32)> {
    // SAFETY: zeroed sockaddr_nl is valid; recvfrom writes at most `length` bytes into it.
    let mut sender: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: the buffer and address pointers are valid for the sizes given.
    let received = unsafe {
        libc::recvfrom(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            0,
            (&raw mut sender).cast(),
            &mut length,
        )
    };
    if received < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((received as usize, sender.nl_pid))
}

/// The sysfs `removable` attribute of the disk at `devpath`.
fn removable(devpath: &str) -> Option<bool> {
    let text = std::fs::read_to_string(format!("/sys{devpath}/removable")).ok()?;
    Some(text.trim() == "1")
}

#[derive(Clone, Copy)]
struct Columns {
    table: &'static Table,
    action: usize,
}

struct Worker {
    ctx: SensorContext,
    columns: Columns,
    options: MediaOptions,
    report_loop_devices: Arc<AtomicBool>,
    socket: OwnedFd,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) {
        self.ctx.health.set_state(SensorState::Running);
        let mut buffer = vec![0u8; MAX_MESSAGE];
        while !self.stop.load(Ordering::Relaxed) {
            match receive(&self.socket, &mut buffer) {
                Ok((length, sender)) => self.handle(&buffer[..length], sender),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.ctx.health.add_lost(1);
                    self.ctx.health.record_error("uevent socket overrun: events were lost");
                }
                Err(e) => {
                    self.ctx.health.record_error(format!("uevent socket: {e}"));
                    self.ctx.health.set_state(SensorState::Failed(format!("uevent socket: {e}")));
                    return;
                }
            }
        }
    }

    fn options(&self) -> MediaOptions {
        MediaOptions { report_loop_devices: self.report_loop_devices.load(Ordering::Relaxed), ..self.options }
    }

    fn handle(&self, message: &[u8], sender: u32) {
        let Some(event) = parse_uevent(message) else { return };
        if !is_trusted(&event, sender, self.options()) {
            log::debug!(
                "sensor {NAME}: ignored untrusted uevent {} {} from port {sender}",
                event.action,
                event.devpath
            );
            return;
        }
        if let Some(action) = self.action(&event) {
            let mut row = Event::new(self.columns.table, self.ctx.stamper.stamp());
            row.set(self.columns.action, action);
            self.ctx.sink.emit(row);
        }
    }

    fn action(&self, event: &Uevent) -> Option<&'static str> {
        // Reading sysfs only for the disks that need it.
        let needs_removable = event.action == "add" && event.var("DEVTYPE") == Some("disk");
        let removable = if needs_removable { removable(&event.devpath) } else { None };
        media_action(event, removable, self.options())
    }
}

impl Sensor for RemovableMediaSensor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        self.stop();
        let table = catalog_table(TABLE)?;
        let columns = Columns { table, action: column_index(table, TABLE, "action")? };
        let socket = open_socket().map_err(|e| SensorError::Source {
            sensor: NAME,
            reason: format!("cannot open the kernel uevent netlink socket: {e}"),
        })?;
        ctx.health.set_mode("netlink");
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            ctx: ctx.clone(),
            columns,
            options: self.options,
            report_loop_devices: Arc::clone(&self.report_loop_devices),
            socket,
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name("watchpost-uevent".into())
            .spawn(move || worker.run())
            .map_err(|source| SensorError::Spawn { sensor: NAME, source })?;
        self.running = Some(SensorThread::new(stop, thread, ctx.health));
        Ok(())
    }

    fn reconfigure(&mut self, config: &watchpost_config::Config) -> Result<(), SensorError> {
        self.report_loop_devices.store(config.sensor_options.removable_media_loop_devices, Ordering::Relaxed);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop("the uevent thread");
        }
    }
}

impl Drop for RemovableMediaSensor {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use watchpost_catalog::{Stamper, Value};

    use crate::SensorHealth;

    use super::*;
    use crate::EventSink;

    const LOOP_CTL_ADD: libc::c_ulong = 0x4C80;
    const LOOP_CTL_REMOVE: libc::c_ulong = 0x4C81;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Event>>);

    impl EventSink for Collect {
        fn emit(&self, event: Event) -> bool {
            self.0.lock().unwrap().push(event);
            true
        }
    }

    impl Collect {
        fn actions(&self) -> Vec<String> {
            let table = catalog_table(TABLE).unwrap();
            let at = table.column_index("action").unwrap();
            self.0.lock().unwrap().iter().map(|e| e.values[at].to_text().unwrap_or_default()).collect()
        }

        /// Waits (without a time assertion: the deadline only bounds a hang) until `done`.
        fn wait_for(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let actions = self.actions();
                if done(&actions) || Instant::now() > deadline {
                    return actions;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every sensor sees every loop device: the tests that make them take turns.
    static LOOP_TESTS: Mutex<()> = Mutex::new(());

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn started(options: MediaOptions) -> (RemovableMediaSensor, Arc<Collect>, Arc<SensorHealth>) {
        let sink = Arc::new(Collect::default());
        let health = Arc::new(SensorHealth::new(NAME));
        let mut sensor = RemovableMediaSensor::with_options(options);
        let ctx =
            SensorContext { sink: sink.clone(), health: Arc::clone(&health), stamper: Stamper::global() };
        sensor.start(ctx).unwrap();
        (sensor, sink, health)
    }

    /// A loop device created for the test and removed when dropped.
    struct LoopDevice {
        control: File,
        number: libc::c_long,
    }

    impl LoopDevice {
        /// Adds a loop device with an unused number (LOOP_CTL_ADD emits a kernel `add` uevent).
        fn add() -> LoopDevice {
            let control = File::options().read(true).write(true).open("/dev/loop-control").unwrap();
            for number in 200..1000 {
                // SAFETY: LOOP_CTL_ADD takes the device number as its argument.
                let result =
                    unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_ADD as _, number as libc::c_long) };
                if result >= 0 {
                    return LoopDevice { control, number };
                }
            }
            panic!("no free loop device number between 200 and 1000");
        }
    }

    impl Drop for LoopDevice {
        fn drop(&mut self) {
            // SAFETY: LOOP_CTL_REMOVE takes the device number as its argument.
            unsafe { libc::ioctl(self.control.as_raw_fd(), LOOP_CTL_REMOVE as _, self.number) };
        }
    }

    #[test]
    fn a_new_loop_device_is_reported_when_tests_opt_in() {
        if !is_root() {
            println!(
                "SKIPPED a_new_loop_device_is_reported_when_tests_opt_in: needs root for /dev/loop-control"
            );
            return;
        }
        let _turn = LOOP_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let options = MediaOptions { report_loop_devices: true, accept_synthetic: false };
        let (mut sensor, sink, health) = started(options);
        let device = LoopDevice::add();
        let actions = sink.wait_for(|actions| !actions.is_empty());
        drop(device);
        sensor.stop();
        assert_eq!(actions, ["Loop Device Attached"]);
        let event = sink.0.lock().unwrap()[0].clone();
        let row = event.into_row(catalog_table(TABLE).unwrap());
        let table = catalog_table(TABLE).unwrap();
        assert_eq!(row[table.column_index("pid").unwrap()], Value::Null, "the kernel does not say who");
        assert!(row[table.column_index("eid").unwrap()].as_str().is_some());
        assert_eq!(health.snapshot().mode, "netlink");
        assert_eq!(health.snapshot().state, "stopped");
    }

    #[test]
    fn synthetic_events_count_only_when_tests_opt_in() {
        if !is_root() {
            println!(
                "SKIPPED synthetic_events_count_only_when_tests_opt_in: needs root to write sysfs uevent files"
            );
            return;
        }
        let _turn = LOOP_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Created before the sensors start, so its own `add` is not seen.
        let device = LoopDevice::add();
        let loops = MediaOptions { report_loop_devices: true, accept_synthetic: false };
        let (mut strict, strict_sink, _) = started(loops);
        let (mut lenient, lenient_sink, _) = started(MediaOptions { accept_synthetic: true, ..loops });
        std::fs::write(format!("/sys/block/loop{}/uevent", device.number), "add").unwrap();
        // A genuine event after the synthetic one: netlink keeps the order, so a sensor that has
        // handled this one has handled the synthetic one too.
        let marker = LoopDevice::add();
        let lenient_actions = lenient_sink.wait_for(|actions| actions.len() >= 2);
        let strict_actions = strict_sink.wait_for(|actions| !actions.is_empty());
        strict.stop();
        lenient.stop();
        drop((device, marker));
        assert_eq!(lenient_actions, ["Loop Device Attached", "Loop Device Attached"]);
        assert_eq!(strict_actions, ["Loop Device Attached"], "only the genuine event is trusted by default");
    }
}
