//! (placeholder: being written)

#[cfg(target_os = "linux")]
#[path = "../tests/common.rs"]
mod common;
#[cfg(target_os = "linux")]
mod support;

#[cfg(target_os = "linux")]
fn main() {
    let _ = support::cpu_seconds(std::process::id());
    let _ = common::BIN;
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this benchmark runs on Linux only");
}
