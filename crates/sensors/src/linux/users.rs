//! User names for uids, from `/etc/passwd`, cached and re-read when the file changes.
//!
//! Hand-written rather than `getpwuid_r`: the sensors call it from event threads at high rates,
//! and NSS modules (LDAP, sssd) may block on the network. The cost: users that exist only in
//! NSS show as their uid.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// uid -> user name, from a passwd file.
#[derive(Debug)]
pub struct UserNames {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    names: HashMap<u32, String>,
    /// Modification time of the file when `names` was read.
    modified: Option<SystemTime>,
}

impl Default for UserNames {
    fn default() -> UserNames {
        UserNames::from_file("/etc/passwd")
    }
}

impl UserNames {
    pub fn from_file(path: impl Into<PathBuf>) -> UserNames {
        UserNames { path: path.into(), state: Mutex::new(Loaded::default()) }
    }

    /// The user name of `uid`, or the uid as text when no entry names it.
    pub fn name(&self, uid: u32) -> String {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(name) = state.names.get(&uid) {
            return name.clone();
        }
        // A miss may be a user added since the last read.
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified != state.modified || state.modified.is_none() {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            state.names = parse_passwd(&text);
            state.modified = modified;
        }
        state.names.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }
}

/// `name:password:uid:...` lines; the first entry of a uid wins, as with getpwuid.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>()
            && !name.is_empty()
        {
            names.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_file_and_unknown_uids_stay_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "root:x:0:0:root:/root:/bin/bash\n# comment\nbad line\nalice:x:1000:1000::/home/alice:/bin/sh\ntoor:x:0:0::/:/bin/sh\n").unwrap();
        let users = UserNames::from_file(&path);
        assert_eq!(users.name(0), "root", "the first entry of a uid wins");
        assert_eq!(users.name(1000), "alice");
        assert_eq!(users.name(4242), "4242");
        // A user added later is found once the file changed.
        std::fs::write(&path, "root:x:0:0:root:/root:/bin/bash\nbob:x:4242:4242::/:/bin/sh\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert_eq!(users.name(4242), "bob");
    }
}
