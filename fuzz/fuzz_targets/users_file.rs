//! The users file parser: any text is a users file or an error, never a panic; a file that
//! parses names only valid users with homes inside the storage namespace.
#![no_main]

use std::path::Path;

use ferroftp_auth_file::UsersFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(users) = UsersFile::parse(text, Path::new("users.toml")) {
        for user in users.list() {
            assert!(user.home().as_str().starts_with('/'));
            assert!(!user.name().is_empty());
        }
        // What `ferroftp user` writes back reads the same.
        let again = UsersFile::parse(&users.to_toml(), Path::new("users.toml"))
            .expect("a users file written by UsersFile parses");
        assert_eq!(again.len(), users.len());
    }
});
