//! Compiles the BPF programs of `src/linux/bpf/` with clang and generates their libbpf-rs
//! skeletons into `OUT_DIR`, when the target is Linux. Needs clang (Debian `clang`), and for
//! libbpf itself libelf and zlib (`libelf-dev zlib1g-dev pkg-config`). The kernel type header
//! `vmlinux.h` is committed (x86_64; CO-RE relocates field offsets at load time), so bpftool is
//! not needed to build.

use std::path::PathBuf;

const PROGRAMS: &[&str] = &["process", "process_access", "network"];

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = manifest_dir.join("src/linux/bpf");
    println!("cargo:rerun-if-changed={}", bpf_dir.join("vmlinux.h").display());
    for program in PROGRAMS {
        let source = bpf_dir.join(format!("{program}.bpf.c"));
        println!("cargo:rerun-if-changed={}", source.display());
        let skeleton = out_dir.join(format!("{program}.skel.rs"));
        if let Err(error) = libbpf_cargo::SkeletonBuilder::new()
            .source(&source)
            // v3: 32-bit sub-registers and the atomic compare-and-swap the network program uses
            // (kernels 5.12 and later; the ring buffer and tp_btf programs need 5.8 anyway).
            .clang_args([format!("-I{}", bpf_dir.display()), "-Wall".to_string(), "-mcpu=v3".to_string()])
            .build_and_generate(&skeleton)
        {
            panic!(
                "cannot compile {}: {error:#}\n(needs clang; Debian: apt-get install clang libelf-dev zlib1g-dev pkg-config)",
                source.display()
            );
        }
    }
}
