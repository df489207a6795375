//! Unix-only behaviour: socket file modes, stale socket clean-up, peer credentials.
#![cfg(unix)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

use watchpost_ipc::{Access, Listener, Stream};

fn socket_in(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().expect("utf-8 path").to_owned()
}

fn mode_of(path: &str) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn owner_access_makes_the_socket_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir, "owner.sock");
    let _listener = Listener::bind(&path, Access::Owner).unwrap();
    assert_eq!(mode_of(&path), 0o600);
}

#[test]
fn anyone_access_makes_the_socket_usable_by_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir, "anyone.sock");
    let _listener = Listener::bind(&path, Access::Anyone).unwrap();
    assert_eq!(mode_of(&path), 0o666);
}

#[test]
fn a_missing_parent_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir, "run/watchpost/api.sock");
    let listener = Listener::bind(&path, Access::Owner).unwrap();
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    let accepted = std::thread::spawn(move || listener.accept().map(|_| ()));
    Stream::connect(&path).unwrap();
    accepted.join().unwrap().unwrap();
}

#[test]
fn a_stale_socket_left_by_a_dead_server_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir, "stale.sock");
    // std's listener does not remove its file when dropped: like a server that crashed.
    drop(UnixListener::bind(&path).unwrap());
    assert!(fs::symlink_metadata(&path).is_ok());
    let listener = Listener::bind(&path, Access::Owner).unwrap();
    let accepted = std::thread::spawn(move || listener.accept().map(|_| ()));
    Stream::connect(&path).unwrap();
    accepted.join().unwrap().unwrap();
}

#[test]
fn a_file_that_is_not_a_socket_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir, "config.toml");
    fs::write(&path, "precious").unwrap();
    let error = Listener::bind(&path, Access::Owner).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(error.to_string().contains(&path), "error does not name the path: {error}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn dropping_the_listener_removes_its_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir, "gone.sock");
    let listener = Listener::bind(&path, Access::Owner).unwrap();
    drop(listener);
    assert!(fs::symlink_metadata(&path).is_err(), "socket file still there after drop");
}

#[test]
fn dropping_the_listener_leaves_a_newer_socket_at_the_same_path_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir, "replaced.sock");
    let listener = Listener::bind(&path, Access::Owner).unwrap();
    fs::remove_file(&path).unwrap();
    let newer = UnixListener::bind(&path).unwrap();
    drop(listener);
    assert!(fs::symlink_metadata(&path).is_ok(), "the newer server's socket was removed");
    drop(newer);
}

#[test]
fn both_ends_see_the_peer_uid() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_in(&dir, "uid.sock");
    let listener = Listener::bind(&path, Access::Owner).unwrap();
    let client = Stream::connect(&path).unwrap();
    let server_side = listener.accept().unwrap();
    let me = rustix::process::geteuid().as_raw();
    assert_eq!(client.peer_uid(), Some(me));
    assert_eq!(server_side.peer_uid(), Some(me));
}

const CLIENT_PATH_VAR: &str = "WATCHPOST_IPC_TEST_CLIENT_PATH";
const NOBODY: u32 = 65534;
const CONNECTED_MARK: &str = "intruder-connected";

/// Not a test on its own: the client that `owner_access_refuses_another_user` runs as another
/// user. It connects, reports it, and reports whether the server closed the connection.
#[test]
#[ignore = "helper process for owner_access_refuses_another_user"]
fn other_user_client() {
    let Ok(path) = std::env::var(CLIENT_PATH_VAR) else { return };
    let mut stream = Stream::connect(&path).unwrap();
    // libtest may print "test other_user_client ... " on the same line first.
    println!("{CONNECTED_MARK}");
    std::io::stdout().flush().unwrap();
    let _ = stream.write_all(b"intruder");
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) | Err(_) => println!("closed by server"),
        Ok(_) => println!("server answered"),
    }
}

#[test]
fn owner_access_refuses_another_user() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: only root can run a client as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let path = socket_in(&dir, "owner-only.sock");
    let listener = Listener::bind(&path, Access::Owner).unwrap();
    // Open the file mode up, so that only the uid check stands in the intruder's way.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    // The intruder runs a copy of this test binary, in case the build directory is private.
    let client_exe = dir.path().join("client");
    fs::copy(std::env::current_exe().unwrap(), &client_exe).unwrap();
    fs::set_permissions(&client_exe, fs::Permissions::from_mode(0o755)).unwrap();

    let mut intruder = Command::new("setpriv")
        .args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into()])
        .arg(&client_exe)
        .args(["--exact", "other_user_client", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CLIENT_PATH_VAR, &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs");
    let mut intruder_output = BufReader::new(intruder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(CONNECTED_MARK) {
        line.clear();
        assert_ne!(intruder_output.read_line(&mut line).unwrap(), 0, "the intruder never connected");
    }

    // The intruder is first in the accept queue; accept must skip it and hand out our client.
    let mut me = Stream::connect(&path).unwrap();
    me.write_all(b"owner").unwrap();
    let mut accepted = listener.accept().unwrap();
    assert_eq!(accepted.peer_uid(), Some(0));
    let mut greeting = [0u8; 5];
    accepted.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"owner");

    let mut rest = String::new();
    intruder_output.read_to_string(&mut rest).unwrap();
    assert!(intruder.wait().unwrap().success(), "intruder client failed: {rest}");
    assert!(rest.contains("closed by server"), "the other user's connection was not refused: {rest}");
}
