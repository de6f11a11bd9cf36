//! The users file, the file authenticator and the anonymous decorator, end to end.

// Test code: a panic is the failure report, so unwrapping is the point (the helpers
// outside `#[test]` functions are not covered by clippy.toml's allow-unwrap-in-tests).
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ferroftp_auth_file::{
    AnonymousAuthenticator, FileAuthenticator, NameProblem, UsersFile, UsersFileError,
    hash_password, validate_user_name,
};
use ferroftp_backend::{
    AccountState, AuthError, Authenticator, LoginAttempt, Password, User, VirtualPath,
};

fn attempt(username: &str, password: &str) -> LoginAttempt {
    LoginAttempt {
        username: username.to_owned(),
        password: Password::new(password),
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn home(path: &str) -> VirtualPath {
    VirtualPath::root().resolve(path).unwrap()
}

struct Fixture {
    _directory: tempfile::TempDir,
    path: PathBuf,
}

/// A users file with `alice` (password "wonderland", home /alice) and `bob` (password
/// "builder", read-only).
fn fixture() -> Fixture {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("users.toml");
    let mut file = UsersFile::new();
    file.add("alice", "wonderland", home("/alice"), false)
        .unwrap();
    file.add("bob", "builder", VirtualPath::root(), true)
        .unwrap();
    file.save(&path).unwrap();
    Fixture {
        _directory: directory,
        path,
    }
}

async fn login(authenticator: &impl Authenticator, name: &str, password: &str) -> Option<User> {
    match authenticator.authenticate(&attempt(name, password)).await {
        Ok(user) => Some(user),
        Err(AuthError::Rejected | AuthError::UnknownUser) => None,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn verifies_passwords_and_rejects_wrong_ones_and_unknown_names() {
    let fixture = fixture();
    let authenticator = FileAuthenticator::open(&fixture.path).unwrap();

    let alice = login(&authenticator, "alice", "wonderland").await.unwrap();
    assert_eq!(
        alice,
        User {
            name: "alice".into(),
            home: home("/alice"),
            read_only: false,
            policy: Default::default(),
        }
    );
    let bob = login(&authenticator, "bob", "builder").await.unwrap();
    assert!(bob.read_only);
    assert!(bob.home.is_root());

    assert_eq!(login(&authenticator, "alice", "builder").await, None);
    assert_eq!(login(&authenticator, "alice", "").await, None);
    assert_eq!(login(&authenticator, "Alice", "wonderland").await, None);
    assert_eq!(login(&authenticator, "carol", "wonderland").await, None);
    assert_eq!(login(&authenticator, "", "").await, None);
    // A wrong password and an unknown name are told apart for the defender only.
    assert!(matches!(
        authenticator
            .authenticate(&attempt("alice", "builder"))
            .await,
        Err(AuthError::Rejected)
    ));
    assert!(matches!(
        authenticator
            .authenticate(&attempt("carol", "wonderland"))
            .await,
        Err(AuthError::UnknownUser)
    ));
}

#[tokio::test]
async fn account_states_follow_the_file_without_a_login() {
    let fixture = fixture();
    let authenticator =
        AnonymousAuthenticator::new(FileAuthenticator::open(&fixture.path).unwrap(), true);
    let AccountState::Active {
        read_only: false,
        credentials,
    } = authenticator.account_state("alice").await
    else {
        panic!("alice is an active, writable account");
    };
    assert!(matches!(
        authenticator.account_state("bob").await,
        AccountState::Active {
            read_only: true,
            ..
        }
    ));
    assert_eq!(
        authenticator.account_state("nobody").await,
        AccountState::Gone
    );
    assert!(matches!(
        authenticator.account_state("anonymous").await,
        AccountState::Active {
            read_only: true,
            ..
        }
    ));

    // alice made read-only by an edit of the file (same password hash).
    let text = std::fs::read_to_string(&fixture.path).unwrap();
    assert_eq!(text.matches("read_only = false").count(), 1, "{text}");
    std::fs::write(
        &fixture.path,
        text.replace("read_only = false", "read_only = true"),
    )
    .unwrap();
    assert_eq!(
        authenticator.account_state("alice").await,
        AccountState::Active {
            read_only: true,
            credentials
        }
    );
    // `user passwd` and `user del`.
    let mut file = UsersFile::load(&fixture.path).unwrap();
    file.set_password("alice", "looking-glass").unwrap();
    file.remove("bob").unwrap();
    file.save(&fixture.path).unwrap();
    let AccountState::Active {
        credentials: new_credentials,
        ..
    } = authenticator.account_state("alice").await
    else {
        panic!("alice still exists");
    };
    assert_ne!(new_credentials, credentials);
    assert_eq!(authenticator.account_state("bob").await, AccountState::Gone);
}

#[tokio::test]
async fn reloads_the_file_when_it_changes() {
    let fixture = fixture();
    let authenticator = FileAuthenticator::open(&fixture.path).unwrap();
    assert_eq!(login(&authenticator, "carol", "secret").await, None);

    // What `ferroftp user add`, `del` and `passwd` do, while the server runs.
    let mut file = UsersFile::load(&fixture.path).unwrap();
    file.add("carol", "secret", VirtualPath::root(), false)
        .unwrap();
    file.remove("bob").unwrap();
    file.set_password("alice", "looking-glass").unwrap();
    file.save(&fixture.path).unwrap();

    assert!(login(&authenticator, "carol", "secret").await.is_some());
    assert_eq!(login(&authenticator, "bob", "builder").await, None);
    assert_eq!(login(&authenticator, "alice", "wonderland").await, None);
    assert!(
        login(&authenticator, "alice", "looking-glass")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn keeps_the_previous_users_while_the_file_is_broken() {
    let fixture = fixture();
    let authenticator = FileAuthenticator::open(&fixture.path).unwrap();

    std::fs::write(&fixture.path, "[[users]\nname = ").unwrap();
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());
    std::fs::remove_file(&fixture.path).unwrap();
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());

    let mut file = UsersFile::new();
    file.add("dave", "pass", VirtualPath::root(), false)
        .unwrap();
    file.save(&fixture.path).unwrap();
    assert!(login(&authenticator, "dave", "pass").await.is_some());
    assert_eq!(login(&authenticator, "alice", "wonderland").await, None);
}

#[tokio::test]
async fn anonymous_decorator_lets_anonymous_in_read_only_when_enabled() {
    let fixture = fixture();
    let enabled =
        AnonymousAuthenticator::new(FileAuthenticator::open(&fixture.path).unwrap(), true);
    // Confined to a directory of its own by default, not the storage root.
    let anonymous = User {
        name: "anonymous".into(),
        home: VirtualPath::root().resolve("/pub").unwrap(),
        read_only: true,
        policy: Default::default(),
    };
    for name in ["anonymous", "ftp", "FTP", "Anonymous"] {
        assert_eq!(
            login(&enabled, name, "guest@example.com").await.as_ref(),
            Some(&anonymous),
            "{name}"
        );
    }
    assert_eq!(login(&enabled, "anonymous", "").await, Some(anonymous));
    // Everyone else goes to the users file.
    assert!(login(&enabled, "alice", "wonderland").await.is_some());
    assert_eq!(login(&enabled, "alice", "nope").await, None);

    let disabled =
        AnonymousAuthenticator::new(FileAuthenticator::open(&fixture.path).unwrap(), false);
    assert_eq!(
        login(&disabled, "anonymous", "guest@example.com").await,
        None
    );
    assert_eq!(login(&disabled, "ftp", "").await, None);
    assert!(login(&disabled, "alice", "wonderland").await.is_some());

    let public = VirtualPath::root().resolve("/srv/public").unwrap();
    let elsewhere =
        AnonymousAuthenticator::new(FileAuthenticator::open(&fixture.path).unwrap(), true)
            .with_home(public.clone());
    let user = login(&elsewhere, "ftp", "").await.unwrap();
    assert_eq!((user.home, user.read_only), (public, true));
}

#[test]
fn edits_report_typed_errors() {
    let mut file = UsersFile::new();
    file.add("alice", "wonderland", VirtualPath::root(), false)
        .unwrap();
    assert!(matches!(
        file.add("alice", "other", VirtualPath::root(), false),
        Err(UsersFileError::UserExists(name)) if name == "alice"
    ));
    assert!(matches!(
        file.remove("bob"),
        Err(UsersFileError::NoSuchUser(name)) if name == "bob"
    ));
    assert!(matches!(
        file.set_password("bob", "x"),
        Err(UsersFileError::NoSuchUser(_))
    ));
    assert!(matches!(
        file.add("carol", "", VirtualPath::root(), false),
        Err(UsersFileError::EmptyPassword)
    ));
    assert_eq!(file.len(), 1);
    let removed = file.remove("alice").unwrap();
    assert_eq!(removed.name(), "alice");
    assert!(file.is_empty());
}

#[test]
fn invalid_names_are_refused() {
    let long = "a".repeat(65);
    let cases: [(&str, NameProblem); 7] = [
        ("", NameProblem::Empty),
        (&long, NameProblem::TooLong),
        ("a b", NameProblem::ForbiddenCharacter(' ')),
        ("al/ice", NameProblem::ForbiddenCharacter('/')),
        ("zoë", NameProblem::ForbiddenCharacter('ë')),
        ("anonymous", NameProblem::Reserved),
        ("FTP", NameProblem::Reserved),
    ];
    let mut file = UsersFile::new();
    for (name, problem) in cases {
        assert_eq!(validate_user_name(name), Err(problem), "{name:?}");
        match file.add(name, "password", VirtualPath::root(), false) {
            Err(UsersFileError::InvalidName {
                name: refused,
                problem: reported,
            }) => {
                assert_eq!(refused, name);
                assert_eq!(reported, problem);
            }
            other => panic!("{name:?} accepted or wrong error: {other:?}"),
        }
    }
    for name in [
        "a",
        "alice.smith",
        "bob_2",
        "x-y",
        &"z".repeat(64),
        "ftpuser",
    ] {
        assert_eq!(validate_user_name(name), Ok(()), "{name:?}");
    }
}

#[cfg(unix)]
#[test]
fn saved_file_is_private_even_when_replacing_a_readable_one() {
    use std::os::unix::fs::PermissionsExt;

    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("users.toml");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut file = UsersFile::load(&path).unwrap();
    file.add("alice", "wonderland", VirtualPath::root(), false)
        .unwrap();
    file.save(&path).unwrap();

    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["users.toml"]);
}

#[test]
fn save_and_load_round_trip() {
    let fixture = fixture();
    let loaded = UsersFile::load(&fixture.path).unwrap();
    let names: Vec<_> = loaded.list().iter().map(|user| user.name()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let alice = loaded.get("alice").unwrap();
    assert_eq!(alice.home(), &home("/alice"));
    assert!(!alice.read_only());
    assert!(alice.password_hash().starts_with("$argon2id$"));
    assert!(alice.verify_password("wonderland"));
    assert!(loaded.get("bob").unwrap().read_only());
    // The hash stays out of debug output.
    assert!(!format!("{alice:?}").contains("argon2"));

    let again = UsersFile::parse(&loaded.to_toml(), Path::new("again.toml")).unwrap();
    assert_eq!(again, loaded);
}

#[test]
fn missing_file_is_an_error_or_empty_on_request() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("absent.toml");
    let error = UsersFile::load(&path).unwrap_err();
    assert!(matches!(error, UsersFileError::Read { .. }));
    assert!(error.to_string().contains("absent.toml"), "{error}");
    assert!(UsersFile::load_or_empty(&path).unwrap().is_empty());
    assert!(FileAuthenticator::open(&path).is_err());
}

fn parse_error(text: &str) -> String {
    let error = UsersFile::parse(text, Path::new("users.toml")).unwrap_err();
    error.to_string()
}

#[test]
fn malformed_files_are_reported_with_their_line() {
    let hash = hash_password("x");

    let message = parse_error("[[users]]\nname = \"alice\"\npasword = \"x\"\n");
    assert!(
        message.starts_with("users file users.toml is malformed"),
        "{message}"
    );
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("unknown field `pasword`"), "{message}");

    let message = parse_error("[[users]]\nname = \"alice\"\n");
    assert!(message.contains("missing field `password`"), "{message}");

    let message = parse_error("[[users]\nname = \"alice\"\n");
    assert!(message.contains("line 1"), "{message}");

    let message = parse_error(&format!(
        "[[users]]\nname = \"alice\"\npassword = \"{hash}\"\n\n[[users]]\nname = \"alice\"\npassword = \"{hash}\"\n"
    ));
    assert_eq!(
        message,
        "users file users.toml, line 6: user \"alice\" is defined twice (first at line 2)"
    );

    let message = parse_error(&format!(
        "[[users]]\nname = \"anonymous\"\npassword = \"{hash}\"\n"
    ));
    assert!(
        message.starts_with("users file users.toml, line 2: invalid user name"),
        "{message}"
    );

    let message = parse_error("[[users]]\nname = \"alice\"\npassword = \"plain-text\"\n");
    assert!(
        message.starts_with("users file users.toml, line 3: user \"alice\": password is not a PHC"),
        "{message}"
    );

    let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$6Yr4y1ugnjKz4mOmD1kp3w";
    let message = parse_error(&format!(
        "[[users]]\nname = \"alice\"\npassword = \"{argon2i}\"\n"
    ));
    assert!(message.contains("expected argon2id"), "{message}");

    let message = parse_error(&format!(
        "[[users]]\nname = \"alice\"\npassword = \"{hash}\"\nhome = \"../etc\"\n"
    ));
    assert!(
        message.starts_with("users file users.toml, line 4: user \"alice\": home"),
        "{message}"
    );
}

#[test]
fn hashes_are_salted_argon2id() {
    let first = hash_password("same");
    let second = hash_password("same");
    assert_ne!(first, second);
    assert!(first.starts_with("$argon2id$v=19$"));
}

#[tokio::test]
async fn a_second_login_is_confirmed_by_the_cache() {
    let fixture = fixture();
    let authenticator = FileAuthenticator::open(&fixture.path).unwrap();
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());
    assert_eq!(authenticator.cache_hits(), 0);
    let alice = login(&authenticator, "alice", "wonderland").await.unwrap();
    assert_eq!(authenticator.cache_hits(), 1);
    assert_eq!(alice.home, home("/alice"));
    assert!(!alice.read_only);
}

#[tokio::test]
async fn wrong_passwords_are_rejected_after_a_cached_success_and_not_cached() {
    let fixture = fixture();
    let authenticator = FileAuthenticator::open(&fixture.path).unwrap();
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());
    assert_eq!(login(&authenticator, "alice", "builder").await, None);
    assert_eq!(login(&authenticator, "alice", "builder").await, None);
    assert_eq!(login(&authenticator, "alice", "").await, None);
    assert_eq!(authenticator.cache_hits(), 0);
    // Failures did not displace the cached success either.
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());
    assert_eq!(authenticator.cache_hits(), 1);
    // A failure is never remembered: another user's failed attempt stays slow and rejected.
    assert_eq!(login(&authenticator, "bob", "wrong").await, None);
    assert_eq!(login(&authenticator, "bob", "wrong").await, None);
    assert_eq!(authenticator.cache_hits(), 1);
}

#[tokio::test]
async fn a_password_change_invalidates_the_cached_login() {
    let fixture = fixture();
    let authenticator = FileAuthenticator::open(&fixture.path).unwrap();
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());
    assert_eq!(authenticator.cache_hits(), 1);

    let mut file = UsersFile::load(&fixture.path).unwrap();
    file.set_password("alice", "looking-glass").unwrap();
    file.save(&fixture.path).unwrap();

    assert_eq!(login(&authenticator, "alice", "wonderland").await, None);
    assert!(
        login(&authenticator, "alice", "looking-glass")
            .await
            .is_some()
    );
    assert_eq!(authenticator.cache_hits(), 1);
    assert!(
        login(&authenticator, "alice", "looking-glass")
            .await
            .is_some()
    );
    assert_eq!(authenticator.cache_hits(), 2);
}

#[tokio::test]
async fn a_zero_ttl_disables_the_cache() {
    let fixture = fixture();
    let authenticator = FileAuthenticator::open(&fixture.path)
        .unwrap()
        .with_cache_ttl(std::time::Duration::ZERO);
    for _ in 0..3 {
        assert!(login(&authenticator, "alice", "wonderland").await.is_some());
    }
    assert_eq!(authenticator.cache_hits(), 0);
}

#[tokio::test]
async fn a_removed_user_is_rejected_despite_a_cached_login() {
    let fixture = fixture();
    let authenticator = FileAuthenticator::open(&fixture.path).unwrap();
    assert!(login(&authenticator, "bob", "builder").await.is_some());
    assert!(login(&authenticator, "bob", "builder").await.is_some());
    assert_eq!(authenticator.cache_hits(), 1);

    let mut file = UsersFile::load(&fixture.path).unwrap();
    file.remove("bob").unwrap();
    file.save(&fixture.path).unwrap();

    assert_eq!(login(&authenticator, "bob", "builder").await, None);
    assert_eq!(authenticator.cache_hits(), 1);
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());
}

#[tokio::test]
async fn logins_arriving_together_share_one_verification() {
    let fixture = fixture();
    // One verification thread: the first login verifies, the others wait behind it in the
    // queue and find its result in the cache.
    let authenticator = std::sync::Arc::new(
        FileAuthenticator::open(&fixture.path)
            .unwrap()
            .with_max_concurrent_verifications(1),
    );
    let logins: Vec<_> = (0..8)
        .map(|_| {
            let authenticator = std::sync::Arc::clone(&authenticator);
            tokio::spawn(async move { login(&*authenticator, "alice", "wonderland").await })
        })
        .collect();
    for login in logins {
        assert!(login.await.unwrap().is_some());
    }
    assert_eq!(authenticator.cache_hits(), 7);
    // A wrong password queued among them would still have been verified and refused.
    assert!(login(&*authenticator, "alice", "wrong").await.is_none());
}

#[test]
fn limits_are_read_with_units_carried_on_the_user_and_saved_back() {
    let hash = hash_password("x");
    let text = format!(
        "[[users]]\nname = \"alice\"\npassword = \"{hash}\"\nmax_sessions = 2\n\
         download_rate = \"1MB/s\"\nupload_rate = 524288\nquota_bytes = \"4MiB\"\n\
         quota_files = 10\nallow_from = [\"192.0.2.0/24\", \"::1\"]\n\n\
         [[users]]\nname = \"bob\"\npassword = \"{hash}\"\n"
    );
    let file = UsersFile::parse(&text, Path::new("users.toml")).unwrap();
    let policy = file.get("alice").unwrap().to_user().policy;
    assert_eq!(
        policy,
        ferroftp_proto::UserPolicy {
            max_sessions: Some(2),
            download_rate: Some(1_000_000),
            upload_rate: Some(524_288),
            quota_bytes: Some(4 << 20),
            quota_files: Some(10),
            allow_from: vec!["192.0.2.0/24".parse().unwrap(), "::1".parse().unwrap()],
        }
    );
    assert_eq!(file.get("bob").unwrap().policy(), &Default::default());
    let saved = file.to_toml();
    assert!(saved.contains("download_rate = \"1MB/s\""), "{saved}");
    assert!(saved.contains("quota_bytes = \"4MiB\""), "{saved}");
    // Accounts without limits are written as before.
    assert!(
        !saved[saved.find("name = \"bob\"").unwrap()..].contains("rate"),
        "{saved}"
    );
    assert_eq!(
        UsersFile::parse(&saved, Path::new("again.toml")).unwrap(),
        file
    );
}

#[test]
fn bad_limits_are_reported_with_their_line() {
    let hash = hash_password("x");
    let entry =
        |line: &str| format!("[[users]]\nname = \"alice\"\npassword = \"{hash}\"\n{line}\n");
    assert_eq!(
        parse_error(&entry("download_rate = \"10Mb/s\"")),
        "users file users.toml, line 4: user \"alice\": download_rate: \"10Mb/s\": units are bytes (B), not bits (b)"
    );
    assert!(
        parse_error(&entry("upload_rate = 0"))
            .contains("line 4: user \"alice\": upload_rate: a rate of 0")
    );
    assert!(
        parse_error(&entry("quota_bytes = \"lots\""))
            .contains("line 4: user \"alice\": quota_bytes")
    );
    assert!(
        parse_error(&entry("max_sessions = 0"))
            .contains("line 4: user \"alice\": max_sessions = 0")
    );
    assert!(
        parse_error(&entry("allow_from = [\"10.0.0.0/40\"]"))
            .contains("line 4: user \"alice\": allow_from")
    );
}

/// A users file whose modification time is before 1970 (touch -d 1969-12-31) is read and
/// watched like any other: no panic in the change detection, logins work.
#[tokio::test]
async fn a_users_file_dated_before_1970_is_served() {
    let fixture = fixture();
    let before_1970 = std::time::UNIX_EPOCH - std::time::Duration::from_secs(1);
    std::fs::File::options()
        .write(true)
        .open(&fixture.path)
        .unwrap()
        .set_modified(before_1970)
        .unwrap();
    let authenticator = FileAuthenticator::open(&fixture.path).unwrap();
    assert!(login(&authenticator, "alice", "wonderland").await.is_some());
    assert!(login(&authenticator, "bob", "builder").await.is_some());
}
