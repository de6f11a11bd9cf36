//! `ferroftp user`: the commands against a users file in a temporary directory.

use clap::Parser;

use super::*;

/// A stand-in for the real command line, to check the argument syntax.
#[derive(Debug, clap::Parser)]
struct TestCli {
    #[command(subcommand)]
    command: UserCommand,
}

fn command(arguments: &[&str]) -> UserCommand {
    TestCli::try_parse_from(std::iter::once("user").chain(arguments.iter().copied()))
        .unwrap()
        .command
}

fn run_with_password(command: UserCommand, password: &str) -> anyhow::Result<String> {
    let mut output = Vec::new();
    execute(command, |_| Ok(password.to_owned()), &mut output)?;
    Ok(String::from_utf8(output).unwrap())
}

#[test]
fn add_list_passwd_del() {
    let directory = tempfile::tempdir().unwrap();
    let users = directory.path().join("users.toml");
    let users_argument = users.to_str().unwrap();

    let report = run_with_password(
        command(&[
            "add",
            "alice",
            "--users",
            users_argument,
            "--home",
            "/sub/dir",
            "--read-only",
        ]),
        "secret",
    )
    .unwrap();
    assert_eq!(
        report,
        format!(
            "added user alice (home /sub/dir, read-only) to {users_argument}\n\
                 the server creates the home /sub/dir in its storage root at alice's first \
                 login (--root DIR or --config FILE creates it now)\n"
        )
    );
    run_with_password(command(&["add", "bob", "--users", users_argument]), "pw").unwrap();

    let list = run_with_password(command(&["list", "--users", users_argument]), "").unwrap();
    assert_eq!(
        list,
        "NAME   HOME      READ-ONLY\nalice  /sub/dir  yes\nbob    /         no\n"
    );

    run_with_password(
        command(&["passwd", "alice", "--users", users_argument]),
        "new",
    )
    .unwrap();
    assert!(
        UsersFile::load(&users)
            .unwrap()
            .get("alice")
            .unwrap()
            .verify_password("new")
    );

    let error =
        run_with_password(command(&["add", "bob", "--users", users_argument]), "x").unwrap_err();
    assert!(error.to_string().contains("already exists"), "{error}");

    run_with_password(command(&["del", "bob", "--users", users_argument]), "").unwrap();
    let error =
        run_with_password(command(&["del", "bob", "--users", users_argument]), "").unwrap_err();
    assert_eq!(error.to_string(), "no user named \"bob\"");
    let error =
        run_with_password(command(&["passwd", "bob", "--users", users_argument]), "x").unwrap_err();
    assert!(error.to_string().starts_with("no user named"), "{error}");
    assert_eq!(UsersFile::load(&users).unwrap().len(), 1);
}

#[test]
fn refuses_bad_arguments_before_asking_for_a_password() {
    let directory = tempfile::tempdir().unwrap();
    let users = directory.path().join("users.toml");
    let users_argument = users.to_str().unwrap();
    let mut output = Vec::new();
    let error = execute(
        command(&["add", "anonymous", "--users", users_argument]),
        |_| panic!("asked for a password"),
        &mut output,
    )
    .unwrap_err();
    assert!(error.to_string().contains("reserved"), "{error}");
    assert!(!users.exists());

    let relative_home = TestCli::try_parse_from([
        "user",
        "add",
        "alice",
        "--users",
        users_argument,
        "--home",
        "sub",
    ]);
    assert!(relative_home.is_err());
    assert!(
        TestCli::try_parse_from(["user", "list"]).is_err(),
        "--users is required"
    );
}

#[test]
fn password_is_the_first_line_of_input() {
    assert_eq!(
        password_from_reader(&b"secret\nignored\n"[..]).unwrap(),
        "secret"
    );
    assert_eq!(password_from_reader(&b"secret\r\n"[..]).unwrap(), "secret");
    assert_eq!(
        password_from_reader(&b"no newline"[..]).unwrap(),
        "no newline"
    );
    assert_eq!(
        password_from_reader(&b" spaced \n"[..]).unwrap(),
        " spaced "
    );
    assert!(password_from_reader(&b""[..]).is_err());
    assert!(password_from_reader(&b"\n"[..]).is_err());
}

#[test]
fn add_creates_the_home_in_the_root_of_a_config_file() {
    let directory = tempfile::tempdir().unwrap();
    let users = directory.path().join("users.toml");
    let root = directory.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let config = directory.path().join("ferroftp.toml");
    std::fs::write(
        &config,
        format!("[storage]\nroot = {:?}\n", root.to_str().unwrap()),
    )
    .unwrap();
    let add = |name: &str, home: &str| {
        run_with_password(
            command(&[
                "add",
                name,
                "--users",
                users.to_str().unwrap(),
                "--home",
                home,
                "--config",
                config.to_str().unwrap(),
            ]),
            "pw",
        )
        .unwrap()
    };
    let report = add("alice", "/homes/alice");
    assert!(
        report.ends_with(&format!(
            "created the home /homes/alice in {}\n",
            root.display()
        )),
        "{report}"
    );
    assert!(root.join("homes/alice").is_dir());
    let report = add("carol", "/homes/alice");
    assert!(
        report.contains("the home /homes/alice exists in"),
        "{report}"
    );

    // A root that does not exist yet is left to the server, which creates both.
    let report = run_with_password(
        command(&[
            "add",
            "dave",
            "--users",
            users.to_str().unwrap(),
            "--home",
            "/dave",
            "--root",
            directory.path().join("later").to_str().unwrap(),
        ]),
        "pw",
    )
    .unwrap();
    assert!(report.contains("does not exist yet"), "{report}");
    assert!(!directory.path().join("later").exists());

    // A config that does not load changes nothing.
    std::fs::write(&config, "[storage]\nnonsense = 1\n").unwrap();
    let refused = run_with_password(
        command(&[
            "add",
            "erin",
            "--users",
            users.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ]),
        "pw",
    );
    assert!(refused.is_err());
    assert!(UsersFile::load(&users).unwrap().get("erin").is_none());
}

#[test]
fn limits_are_set_at_add_and_changed_later() {
    let directory = tempfile::tempdir().unwrap();
    let users = directory.path().join("users.toml");
    let users_argument = users.to_str().unwrap();
    run_with_password(
        command(&[
            "add",
            "alice",
            "--users",
            users_argument,
            "--download-rate",
            "1MB/s",
            "--quota-bytes",
            "5GiB",
            "--allow-from",
            "192.0.2.0/24",
            "--allow-from",
            "::1",
        ]),
        "secret",
    )
    .unwrap();
    let policy = UsersFile::load(&users)
        .unwrap()
        .get("alice")
        .unwrap()
        .policy()
        .clone();
    assert_eq!(policy.download_rate, Some(1_000_000));
    assert_eq!(policy.quota_bytes, Some(5 << 30));
    assert_eq!(policy.allow_from.len(), 2);

    let report = run_with_password(
        command(&[
            "limits",
            "alice",
            "--users",
            users_argument,
            "--max-sessions",
            "2",
            "--upload-rate",
            "512KiB/s",
        ]),
        "",
    )
    .unwrap();
    assert_eq!(
        report,
        "alice: max_sessions 2, download_rate 1MB/s, upload_rate 512KiB/s, quota_bytes \
             5GiB, allow_from 192.0.2.0/24,::1/128\n"
    );
    let report = run_with_password(
        command(&["limits", "alice", "--users", users_argument, "--clear"]),
        "",
    )
    .unwrap();
    assert_eq!(report, "alice: no limits\n");
    assert_eq!(
        UsersFile::load(&users)
            .unwrap()
            .get("alice")
            .unwrap()
            .policy(),
        &UserPolicy::default()
    );
    for bad in [
        &[
            "limits",
            "alice",
            "--users",
            "u",
            "--download-rate",
            "10Mb/s",
        ][..],
        &["limits", "alice", "--users", "u", "--max-sessions", "0"],
        &[
            "limits",
            "alice",
            "--users",
            "u",
            "--allow-from",
            "10.0.0.0/99",
        ],
    ] {
        let parsed = TestCli::try_parse_from(std::iter::once("user").chain(bad.iter().copied()));
        assert!(parsed.is_err(), "{bad:?}");
    }
}
