//! Server integration tests: an in-process server on port 0, driven by our own client over
//! loopback. One test binary for the crate; every test gets its own server, storage and
//! passive range, so they run in parallel.

// Test code: a panic is the failure report, so unwrapping is the point (the helpers
// outside `#[test]` functions are not covered by clippy.toml's allow-unwrap-in-tests).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ferroftp_backend::testing::MemoryStorage;
use ferroftp_backend::{
    AccountState, AuthError, Authenticator, LoginAttempt, Storage, User, VirtualPath,
};
use ferroftp_client::{Client, ClientError, ClientOptions, DataMode, Reply};
use ferroftp_proto::UserPolicy;
use ferroftp_server::{
    PassiveLimits, Server, ServerOptions, SessionThreads, TransferCompletion, TransferDirection,
    TransferObserver, TransferRecord,
};
use ferroftp_storage_fs::FsStorage;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Accepts alice/secret (read-write), reader/secret (read-only), bob (home /home/bob) and
/// carol (home /home/carol).
#[derive(Debug)]
struct TestUsers;

#[async_trait]
impl Authenticator for TestUsers {
    async fn authenticate(&self, attempt: &LoginAttempt) -> Result<User, AuthError> {
        if attempt.password.expose() != "secret" {
            return Err(AuthError::Rejected);
        }
        let mut policy = UserPolicy::default();
        let (home, read_only) = match attempt.username.as_str() {
            "alice" => ("/", false),
            "reader" => ("/", true),
            "bob" => ("/home/bob", false),
            "carol" => ("/home/carol", false),
            // Limits (docs/security.md, "Limits and quotas").
            "quota" => {
                policy.quota_bytes = Some(1000);
                policy.quota_files = Some(3);
                ("/home/quota", false)
            }
            "capped" => {
                policy.max_sessions = Some(1);
                ("/", false)
            }
            "remote" => {
                policy.allow_from = vec!["192.0.2.0/24".parse().unwrap()];
                ("/", false)
            }
            "slow" => {
                policy.download_rate = Some(100_000);
                policy.upload_rate = Some(100_000);
                ("/", false)
            }
            _ => return Err(AuthError::Rejected),
        };
        Ok(User {
            name: attempt.username.clone(),
            home: VirtualPath::root().resolve(home).unwrap(),
            read_only,
            policy,
        })
    }
}

/// Accounts that change under a running server, as a users file edited by `ferroftp user`
/// does: name → (read-only, credentials). Every password is "secret"; home `/`.
#[derive(Debug, Default)]
struct ChangingUsers {
    accounts: std::sync::Mutex<std::collections::HashMap<String, (bool, u64)>>,
}

impl ChangingUsers {
    fn set(&self, name: &str, account: Option<(bool, u64)>) {
        let mut accounts = self.accounts.lock().unwrap();
        match account {
            Some(account) => accounts.insert(name.to_owned(), account),
            None => accounts.remove(name),
        };
    }
}

#[async_trait]
impl Authenticator for ChangingUsers {
    async fn authenticate(&self, attempt: &LoginAttempt) -> Result<User, AuthError> {
        let accounts = self.accounts.lock().unwrap();
        match accounts.get(&attempt.username) {
            Some(&(read_only, _)) if attempt.password.expose() == "secret" => Ok(User {
                name: attempt.username.clone(),
                home: VirtualPath::root(),
                read_only,
                policy: Default::default(),
            }),
            _ => Err(AuthError::Rejected),
        }
    }

    async fn account_state(&self, name: &str) -> AccountState {
        match self.accounts.lock().unwrap().get(name) {
            Some(&(read_only, credentials)) => AccountState::Active {
                read_only,
                credentials,
            },
            None => AccountState::Gone,
        }
    }
}

/// Each test server gets its own 20-port passive range, so parallel tests never share one.
/// Ranges from 11000 on: below the kernel's ephemeral ports (32768-60999), where the test
/// clients' own connections could hold a port, and below the interop suite's 21000-30999.
fn passive_range(size: u16) -> std::ops::RangeInclusive<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(11000);
    let first = NEXT.fetch_add(size.max(20), Ordering::Relaxed);
    first..=first + size - 1
}

struct TestServer {
    address: SocketAddr,
    _root: Option<tempfile::TempDir>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn test_options() -> ServerOptions {
    let mut options = ServerOptions {
        passive_ports: passive_range(20),
        failed_login_delay: Duration::ZERO,
        ..ServerOptions::default()
    };
    options.data.accept_timeout = Duration::from_secs(10);
    options.data.connect_timeout = Duration::from_secs(10);
    options
}

async fn start(
    options: ServerOptions,
    storage: Arc<dyn Storage>,
    root: Option<tempfile::TempDir>,
) -> TestServer {
    try_start(options, storage, root).await.unwrap()
}

/// [`start`], for a test that picks its own listening port and tries another when it is taken.
async fn try_start(
    options: ServerOptions,
    storage: Arc<dyn Storage>,
    root: Option<tempfile::TempDir>,
) -> Result<TestServer, ferroftp_server::ServerError> {
    let server = Server::bind(options, storage, Arc::new(TestUsers)).await?;
    let address = server.local_addrs()[0];
    let task = tokio::spawn(server.run(std::future::pending()));
    Ok(TestServer {
        address,
        _root: root,
        task,
    })
}

async fn memory_server() -> TestServer {
    start(test_options(), Arc::new(MemoryStorage::new()), None).await
}

async fn fs_server() -> (TestServer, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().to_path_buf();
    let storage = Arc::new(FsStorage::new(&path).unwrap());
    (start(test_options(), storage, Some(root)).await, path)
}

impl TestServer {
    async fn connect(&self) -> Client {
        connect_to(self.address).await
    }

    async fn login(&self, user: &str) -> Client {
        login_to(self.address, user).await
    }
}

async fn connect_to(address: SocketAddr) -> Client {
    let options = ClientOptions {
        timeout: Duration::from_secs(20),
    };
    let (client, greeting) = Client::connect_with_options(address, options)
        .await
        .unwrap();
    assert_eq!(greeting.code.0, 220);
    client
}

async fn login_to(address: SocketAddr, user: &str) -> Client {
    let mut client = connect_to(address).await;
    let reply = client.login(user, "secret").await.unwrap();
    assert_eq!(reply.code.0, 230);
    client
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn pattern(length: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

async fn code(client: &mut Client, line: &str) -> u16 {
    client.command(line).await.unwrap().code.0
}

#[tokio::test]
async fn login_rules_and_reply_codes() {
    let server = memory_server().await;
    let mut client = server.connect().await;
    assert_eq!(code(&mut client, "PASS x").await, 503);
    assert_eq!(code(&mut client, "LIST").await, 530);
    assert_eq!(code(&mut client, "USER alice").await, 331);
    assert_eq!(code(&mut client, "PASS wrong").await, 530);
    assert_eq!(code(&mut client, "USER alice").await, 331);
    assert_eq!(code(&mut client, "PASS secret").await, 230);
    assert_eq!(code(&mut client, "SYST").await, 215);
    assert_eq!(code(&mut client, "FROB").await, 500);
    assert_eq!(code(&mut client, "ACCT x").await, 502);
    assert_eq!(code(&mut client, "RNTO x").await, 503);
    let feat = client.command("FEAT").await.unwrap();
    assert_eq!(feat.code.0, 211);
    assert!(feat.lines.iter().any(|line| line == "EPSV"), "{feat:?}");
    assert_eq!(client.quit().await.unwrap().code.0, 221);
}

#[tokio::test]
async fn round_trip_in_every_data_mode_is_byte_exact() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    for (index, mode) in DataMode::ALL.into_iter().enumerate() {
        for size in [0usize, 1, 1 << 20] {
            let data = pattern(size + index);
            let name = format!("/f-{index}-{size}");
            client.store(&name, mode, &data).await.unwrap();
            let back = client.retrieve(&name, mode).await.unwrap();
            assert_eq!(sha256(&back), sha256(&data), "{mode:?} {size}");
            let size_reply = client.command(&format!("SIZE {name}")).await.unwrap();
            assert_eq!(size_reply.text(), data.len().to_string());
        }
    }
}

#[tokio::test]
async fn ascii_mode_converts_line_ends_both_ways() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    assert_eq!(code(&mut client, "TYPE A").await, 200);
    client
        .store("/text", DataMode::ExtendedPassive, b"one\r\ntwo\r\n")
        .await
        .unwrap();
    assert_eq!(code(&mut client, "TYPE I").await, 200);
    assert_eq!(
        client
            .retrieve("/text", DataMode::ExtendedPassive)
            .await
            .unwrap(),
        b"one\ntwo\n"
    );
    assert_eq!(code(&mut client, "TYPE A").await, 200);
    assert_eq!(
        client.retrieve("/text", DataMode::Passive).await.unwrap(),
        b"one\r\ntwo\r\n"
    );
}

#[tokio::test]
async fn listings_show_what_was_stored() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    assert_eq!(code(&mut client, "MKD /dir").await, 257);
    client
        .store("/dir/a.txt", DataMode::ExtendedPassive, b"12345")
        .await
        .unwrap();
    let names = client
        .list("NLST", Some("/dir"), DataMode::ExtendedPassive)
        .await
        .unwrap();
    assert_eq!(names, b"a.txt\r\n");
    let long = String::from_utf8(
        client
            .list("LIST", Some("-la /dir"), DataMode::Passive)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(long.starts_with("-rw-"), "{long}");
    assert!(
        long.trim_end().ends_with(" 5 ") || long.contains(" 5 "),
        "{long}"
    );
    assert!(long.trim_end().ends_with("a.txt"), "{long}");
    let machine = String::from_utf8(
        client
            .list("MLSD", Some("/dir"), DataMode::Active)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(machine.starts_with("type=file;size=5;modify="), "{machine}");
    assert!(machine.ends_with("; a.txt\r\n"), "{machine}");
    let mlst = client.command("MLST /dir/a.txt").await.unwrap();
    assert_eq!(mlst.code.0, 250);
    assert!(mlst.lines[1].starts_with("type=file;size=5;"), "{mlst:?}");
    let stat = client.command("STAT /dir").await.unwrap();
    assert_eq!(stat.code.0, 213);
    assert!(
        stat.lines.iter().any(|line| line.ends_with(" a.txt")),
        "{stat:?}"
    );
}

#[tokio::test]
async fn file_actions_rename_delete_mkd_rmd_mfmt() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    client
        .store("/a", DataMode::ExtendedPassive, b"x")
        .await
        .unwrap();
    assert_eq!(code(&mut client, "RNFR /a").await, 350);
    assert_eq!(code(&mut client, "RNTO /b").await, 250);
    assert_eq!(code(&mut client, "SIZE /a").await, 550);
    assert_eq!(code(&mut client, "MFMT 20200102030405 /b").await, 213);
    assert_eq!(
        client.command("MDTM /b").await.unwrap().text(),
        "20200102030405"
    );
    assert_eq!(code(&mut client, "MKD /d").await, 257);
    assert_eq!(code(&mut client, "MKD /d").await, 550);
    assert_eq!(code(&mut client, "CWD /d").await, 250);
    assert_eq!(
        client.command("PWD").await.unwrap().text(),
        "\"/d\" is the current directory"
    );
    assert_eq!(code(&mut client, "CDUP").await, 250);
    assert_eq!(code(&mut client, "RMD /d").await, 250);
    assert_eq!(code(&mut client, "DELE /b").await, 250);
    assert_eq!(code(&mut client, "DELE /b").await, 550);
    assert_eq!(code(&mut client, "RNFR /missing").await, 550);
}

#[tokio::test]
async fn home_directory_is_a_chroot() {
    let server = memory_server().await;
    let mut alice = server.login("alice").await;
    assert_eq!(code(&mut alice, "MKD /home").await, 257);
    assert_eq!(code(&mut alice, "MKD /home/bob").await, 257);
    alice
        .store("/secret", DataMode::ExtendedPassive, b"alice only")
        .await
        .unwrap();
    let mut bob = server.login("bob").await;
    bob.store("/mine", DataMode::ExtendedPassive, b"bob")
        .await
        .unwrap();
    assert_eq!(code(&mut bob, "SIZE /secret").await, 550);
    assert_eq!(code(&mut bob, "SIZE ../secret").await, 550);
    assert_eq!(code(&mut bob, "CWD ..").await, 550);
    assert_eq!(
        alice
            .retrieve("/home/bob/mine", DataMode::ExtendedPassive)
            .await
            .unwrap(),
        b"bob"
    );
}

#[tokio::test]
async fn read_only_user_can_read_but_not_write() {
    let server = memory_server().await;
    let mut alice = server.login("alice").await;
    alice
        .store("/f", DataMode::ExtendedPassive, b"data")
        .await
        .unwrap();
    let mut reader = server.login("reader").await;
    assert_eq!(
        reader
            .retrieve("/f", DataMode::ExtendedPassive)
            .await
            .unwrap(),
        b"data"
    );
    for line in ["DELE /f", "MKD /x", "RNFR /f", "STOR /g", "APPE /f"] {
        assert_eq!(code(&mut reader, line).await, 550, "{line}");
    }
}

#[tokio::test]
async fn rest_resumes_downloads_and_uploads() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    let data = pattern(300_000);
    client
        .store("/big", DataMode::ExtendedPassive, &data)
        .await
        .unwrap();
    // Download from an offset.
    assert_eq!(code(&mut client, "REST 100000").await, 350);
    let tail = client
        .retrieve("/big", DataMode::ExtendedPassive)
        .await
        .unwrap();
    assert_eq!(tail, &data[100_000..]);
    // Upload: REST n + STOR rewrites from n; APPE continues.
    client
        .store("/up", DataMode::ExtendedPassive, &data[..1000])
        .await
        .unwrap();
    assert_eq!(code(&mut client, "REST 500").await, 350);
    client
        .store("/up", DataMode::ExtendedPassive, &data[500..2000])
        .await
        .unwrap();
    let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
    let (_, mut stream) = client.transfer_command("APPE /up", prepared).await.unwrap();
    stream.send(&data[2000..]).await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(client.finish().await.unwrap().code.0, 226);
    assert_eq!(
        sha256(
            &client
                .retrieve("/up", DataMode::ExtendedPassive)
                .await
                .unwrap()
        ),
        sha256(&data)
    );
    assert_eq!(code(&mut client, "REST 999999999").await, 350);
    let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
    let error = client
        .transfer_command("RETR /up", prepared)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::UnexpectedReply(Reply { code, .. }) if code.0 == 554),
        "{error:?}"
    );
}

#[tokio::test]
async fn port_to_a_third_party_is_refused_and_nothing_connects() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    // The client is 127.0.0.1; 127.0.0.2 is someone else (RFC 2577 bounce).
    let third_party = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = third_party.local_addr().unwrap().port();
    let reply = client
        .command(&format!("PORT 127,0,0,2,{},{}", port >> 8, port & 0xff))
        .await
        .unwrap();
    assert_eq!(reply.code.0, 504, "{reply:?}");
    let reply = client
        .command(&format!("EPRT |1|127.0.0.2|{port}|"))
        .await
        .unwrap();
    assert_eq!(reply.code.0, 504, "{reply:?}");
    assert_eq!(code(&mut client, "PORT 127,0,0,1,0,21").await, 504);
    // No data endpoint was accepted, so a transfer now cannot start: 425, no connect.
    assert_eq!(code(&mut client, "LIST").await, 425);
    let accepted = tokio::time::timeout(Duration::ZERO, third_party.accept()).await;
    assert!(accepted.is_err(), "the server connected to the third party");
}

#[tokio::test]
async fn passive_connection_from_a_foreign_address_is_refused() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    client
        .store("/f", DataMode::ExtendedPassive, b"payload")
        .await
        .unwrap();
    let reply = client.command("EPSV").await.unwrap();
    let port = ferroftp_proto::host_port::parse_epsv_reply(&reply.text()).unwrap();
    // A stranger on 127.0.0.2 connects first: the server must drop it and keep waiting.
    let stranger = tokio::net::TcpSocket::new_v4().unwrap();
    stranger.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stranger = stranger
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    client.send_raw(b"RETR /f\r\n").await.unwrap();
    let mut buffer = Vec::new();
    // The stranger reads nothing: the server closes its connection.
    let read =
        tokio::time::timeout(Duration::from_secs(20), stranger.read_to_end(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "{read:?} {buffer:?}"
    );
    // The real client still gets the file.
    let mut data = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    assert_eq!(client.read_reply().await.unwrap().code.0, 150);
    let mut received = Vec::new();
    data.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, b"payload");
    assert_eq!(client.read_reply().await.unwrap().code.0, 226);
}

#[tokio::test]
async fn passive_range_exhaustion_replies_425() {
    let options = ServerOptions {
        passive_ports: passive_range(1),
        ..test_options()
    };
    let server = start(options, Arc::new(MemoryStorage::new()), None).await;
    let mut first = server.login("alice").await;
    let mut second = server.login("alice").await;
    assert_eq!(code(&mut first, "EPSV").await, 229);
    assert_eq!(code(&mut second, "EPSV").await, 425);
    // A new PASV in the same session replaces its listener rather than taking a second port.
    assert_eq!(code(&mut first, "EPSV").await, 229);
    assert_eq!(code(&mut first, "ABOR").await, 226);
    assert_eq!(code(&mut second, "EPSV").await, 229);
}

#[tokio::test]
async fn passive_ports_are_capped_per_user_and_per_client_address() {
    let options = ServerOptions {
        passive_ports: passive_range(8),
        passive_limits: Some(PassiveLimits {
            per_user: 2,
            per_client: 3,
        }),
        ..test_options()
    };
    let server = start(options, Arc::new(MemoryStorage::new()), None).await;
    let mut alice = [
        server.login("alice").await,
        server.login("alice").await,
        server.login("alice").await,
    ];
    assert_eq!(code(&mut alice[0], "EPSV").await, 229);
    assert_eq!(code(&mut alice[1], "PASV").await, 227);
    let refused = alice[2].command("EPSV").await.unwrap();
    assert_eq!(refused.code.0, 425);
    assert!(
        refused.text().contains("passive.max_per_user"),
        "{refused:?}"
    );
    let mut bob = server.login("bob").await;
    assert_eq!(code(&mut bob, "EPSV").await, 229);
    // 127.0.0.1 holds 3 now, whoever the user.
    let mut reader = server.login("reader").await;
    let refused = reader.command("PASV").await.unwrap();
    assert_eq!(refused.code.0, 425);
    assert!(
        refused.text().contains("passive.max_per_client"),
        "{refused:?}"
    );
    // Only ports held count: ABOR closes a listener, the end of a transfer its port.
    assert_eq!(code(&mut alice[0], "ABOR").await, 226);
    assert_eq!(code(&mut alice[2], "EPSV").await, 229);
    alice[1]
        .store("/f", DataMode::ExtendedPassive, b"data")
        .await
        .unwrap();
    assert_eq!(code(&mut reader, "EPSV").await, 229);
    assert_eq!(code(&mut alice[0], "EPSV").await, 425);
}

#[tokio::test]
async fn session_caps_answer_421() {
    let options = ServerOptions {
        max_sessions_per_ip: 2,
        ..test_options()
    };
    let server = start(options, Arc::new(MemoryStorage::new()), None).await;
    let _one = server.connect().await;
    let _two = server.connect().await;
    let (_three, greeting) = Client::connect(server.address).await.unwrap();
    assert_eq!(greeting.code.0, 421);
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_session_goes_on() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    let mut long = vec![b'A'; 9000];
    long.extend_from_slice(b"\r\n");
    client.send_raw(&long).await.unwrap();
    assert_eq!(client.read_reply().await.unwrap().code.0, 500);
    client.send_raw(b"CWD a\0b\r\n").await.unwrap();
    assert_eq!(client.read_reply().await.unwrap().code.0, 501);
    client.send_raw(b"CWD \xff\xfe\r\n").await.unwrap();
    assert_eq!(client.read_reply().await.unwrap().code.0, 501);
    assert_eq!(code(&mut client, "RETR ../../etc/passwd").await, 550);
    assert_eq!(code(&mut client, "NOOP").await, 200);
    // And the server still serves new sessions.
    let mut other = server.login("alice").await;
    assert_eq!(code(&mut other, "NOOP").await, 200);
}

#[tokio::test]
async fn idle_session_is_closed_with_421() {
    let mut options = test_options();
    options.session.idle_timeout = Duration::from_millis(300);
    let server = start(options, Arc::new(MemoryStorage::new()), None).await;
    let mut client = server.login("alice").await;
    // Wait on the socket: the server speaks first.
    assert_eq!(client.read_reply().await.unwrap().code.0, 421);
}

#[tokio::test]
async fn the_idle_timeout_is_set_again_after_each_transfer() {
    let mut options = test_options();
    // Long enough that no gap between two commands of a loaded test machine reaches it.
    options.session.idle_timeout = Duration::from_secs(2);
    let server = start(options, Arc::new(MemoryStorage::new()), None).await;
    let mut client = server.login("alice").await;
    // A transfer in flight has no idle deadline; the session's one timer is set again after
    // it, later than before.
    for n in 0..2 {
        let reply = store_reply(&mut client, &format!("/f{n}"), b"data").await;
        assert_eq!(reply.code.0, 226);
    }
    assert_eq!(client.read_reply().await.unwrap().code.0, 421);
}

#[tokio::test]
async fn a_session_that_does_not_log_in_is_closed_by_the_login_timeout() {
    let mut options = test_options();
    options.session.idle_timeout = Duration::from_secs(600);
    options.session.login_timeout = Duration::from_millis(500);
    let server = start(options, Arc::new(MemoryStorage::new()), None).await;
    let mut client = server.connect().await;
    assert_eq!(code(&mut client, "NOOP").await, 200);
    assert_eq!(code(&mut client, "USER alice").await, 331);
    // Wait on the socket: NOOP did not extend the deadline, the server speaks first.
    let reply = client.read_reply().await.unwrap();
    assert_eq!(
        (reply.code.0, reply.text().as_str()),
        (421, "Login timeout, closing connection")
    );
}

#[tokio::test]
async fn open_sessions_follow_their_account_deleted_made_read_only_or_given_a_new_password() {
    let users = Arc::new(ChangingUsers::default());
    for name in ["alice", "bob", "carol", "dave"] {
        users.set(name, Some((false, 1)));
    }
    let server = Server::bind(
        test_options(),
        Arc::new(MemoryStorage::new()),
        Arc::clone(&users) as Arc<dyn Authenticator>,
    )
    .await
    .unwrap();
    let address = server.local_addrs()[0];
    let handle = server.handle();
    let _task = AbortOnDrop(tokio::spawn(server.run(std::future::pending())));
    let mut idle = login_to(address, "dave").await;
    let mut alice = login_to(address, "alice").await;
    let mut bob = login_to(address, "bob").await;
    let mut carol = login_to(address, "carol").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(code(client, "MKD /before").await, 257);
        assert_eq!(code(client, "RMD /before").await, 250);
    }
    // alice made read-only: her next write is refused, reading goes on.
    users.set("alice", Some((true, 1)));
    assert_eq!(code(&mut alice, "MKD /after").await, 550);
    assert_eq!(code(&mut alice, "PWD").await, 257);
    // bob deleted, carol's password changed: 421 and the connection closes.
    users.set("bob", None);
    users.set("carol", Some((false, 2)));
    for client in [&mut bob, &mut carol] {
        let reply = client.command("NOOP").await.unwrap();
        assert_eq!(
            (reply.code.0, reply.text().as_str()),
            (
                421,
                "Account removed or its password changed, closing control connection"
            )
        );
        assert!(client.read_reply().await.is_err());
    }
    // alice writable again.
    users.set("alice", Some((false, 1)));
    assert_eq!(code(&mut alice, "MKD /after").await, 257);
    // A reload (SIGHUP) makes idle sessions check too: dave hears without a command.
    users.set("dave", None);
    handle
        .reload(test_options(), Arc::clone(&users) as Arc<dyn Authenticator>)
        .await
        .unwrap();
    assert_eq!(idle.read_reply().await.unwrap().code.0, 421);
    assert_eq!(code(&mut alice, "NOOP").await, 200);
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn abor_stops_a_running_download() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    client
        .store("/big", DataMode::ExtendedPassive, &pattern(64 << 20))
        .await
        .unwrap();
    let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
    let (preliminary, mut stream) = client
        .transfer_command("RETR /big", prepared)
        .await
        .unwrap();
    assert_eq!(preliminary.code.0, 150);
    // Read a little, then abort while the server is blocked on a full socket.
    let mut some = [0u8; 1024];
    stream.read_exact(&mut some).await.unwrap();
    client.send_raw(b"ABOR\r\n").await.unwrap();
    let first = client.read_reply().await.unwrap().code.0;
    let codes = if first == 226 {
        vec![first] // the transfer had already finished
    } else {
        vec![first, client.read_reply().await.unwrap().code.0]
    };
    assert!(codes == [426, 226] || codes == [226], "{codes:?}");
    drop(stream);
    assert_eq!(code(&mut client, "NOOP").await, 200);
}

/// RFC 959 §4.1.3: before ABOR a client sends Telnet IP and Synch, the Synch as TCP urgent
/// data; lftp sends `IAC IP IAC` with `MSG_OOB`, then `DM` and the line. The kernel ends a
/// read at the urgent mark, and the rest of the line used to wait in the socket until the
/// client's next command arrived: the reply to ABOR never came to a client that waited
/// for it. Repeated, as whether the transfer finishes before the ABOR arrives varies.
#[tokio::test]
async fn abor_after_an_urgent_telnet_synch_is_answered_without_a_next_command() {
    let (server, root) = fs_server().await;
    std::fs::write(root.join("big"), pattern(64 << 20)).unwrap();
    let control = std::net::TcpStream::connect(server.address).unwrap();
    // The same socket, to send the urgent bytes the client crate has no call for.
    let urgent = control.try_clone().unwrap();
    control.set_nonblocking(true).unwrap();
    let options = ClientOptions {
        timeout: Duration::from_secs(30),
    };
    let stream = tokio::net::TcpStream::from_std(control).unwrap();
    let mut client = Client::from_stream(stream, options).unwrap();
    assert_eq!(client.read_reply().await.unwrap().code.0, 220);
    assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
    for round in 0..30 {
        let prepared = client.open_data(DataMode::Passive).await.unwrap();
        let (preliminary, mut stream) = client
            .transfer_command("RETR /big", prepared)
            .await
            .unwrap();
        assert_eq!(preliminary.code.0, 150);
        let mut first = vec![0u8; 64 << 10];
        stream.read_exact(&mut first).await.unwrap();
        const IAC: u8 = 255;
        const IP: u8 = 244;
        const DM: u8 = 242;
        let sent = rustix::net::send(&urgent, &[IAC, IP, IAC], rustix::net::SendFlags::OOB);
        assert_eq!(sent.unwrap(), 3);
        client.send_raw(&[DM]).await.unwrap();
        client.send_raw(b"ABOR\r\n").await.unwrap();
        // The client keeps reading the data connection, as lftp does, until the server
        // closes it (all of the file, or less after the abort).
        stream.receive_into(&mut tokio::io::sink()).await.ok();
        // A hang here (the client's 30 s timeout) is the failure.
        let reply = client.read_reply().await.unwrap();
        let replies = match (reply.code.0, reply.lines[0].as_str()) {
            (426, _) | (226, "Transfer complete") => {
                let second = client.read_reply().await.unwrap();
                vec![reply, second]
            }
            _ => vec![reply],
        };
        let replies: Vec<(u16, &str)> = replies
            .iter()
            .map(|reply| (reply.code.0, reply.lines[0].as_str()))
            .collect();
        assert!(
            replies == [(426, "Transfer aborted"), (226, "ABOR successful")]
                || replies == [(226, "Transfer complete"), (226, "No transfer to abort")]
                || replies == [(226, "Transfer complete, ABOR ignored")],
            "round {round}: {replies:?}"
        );
    }
    assert_eq!(code(&mut client, "NOOP").await, 200);
}

#[tokio::test]
async fn abor_stops_an_upload_into_a_local_file_and_releases_it() {
    // A plain binary upload to the filesystem is received on a blocking thread; ABOR must
    // end that thread too: the partial file's lock is free for the next upload at once.
    let (server, root) = fs_server().await;
    let mut client = server.login("alice").await;
    let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
    let (preliminary, mut stream) = client
        .transfer_command("STOR /file", prepared)
        .await
        .unwrap();
    assert_eq!(preliminary.code.0, 150);
    stream.send(&pattern(100_000)).await.unwrap();
    wait_for_file_size(&root.join(".ferroftp-partial.file"), 100_000).await;
    // The client keeps its data connection open: only ABOR can end the transfer.
    client.send_raw(b"ABOR\r\n").await.unwrap();
    assert_eq!(client.read_reply().await.unwrap().code.0, 426);
    assert_eq!(client.read_reply().await.unwrap().code.0, 226);
    // The server shut the data connection down.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.receive_into(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // Nothing was published, and the same name can be uploaded again right away.
    assert!(!root.join("file").exists());
    let content = pattern(300_000);
    client
        .store("/file", DataMode::ExtendedPassive, &content)
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("file")).unwrap(), content);
}

#[tokio::test]
async fn a_transfer_does_not_block_other_sessions() {
    let server = memory_server().await;
    let mut slow = server.login("alice").await;
    slow.store("/big", DataMode::ExtendedPassive, &pattern(32 << 20))
        .await
        .unwrap();
    let prepared = slow.open_data(DataMode::ExtendedPassive).await.unwrap();
    // Nobody reads this stream: the server's sends block once the socket buffers fill.
    let (_, _stalled) = slow.transfer_command("RETR /big", prepared).await.unwrap();
    let mut other = server.login("alice").await;
    other
        .store("/small", DataMode::Passive, b"quick")
        .await
        .unwrap();
    assert_eq!(
        other.retrieve("/small", DataMode::Active).await.unwrap(),
        b"quick"
    );
}

/// Keeps every transfer record, for the test to read.
#[derive(Debug, Default)]
struct RecordedTransfers(std::sync::Mutex<Vec<TransferRecord>>);

impl TransferObserver for RecordedTransfers {
    fn transfer_finished(&self, record: &TransferRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

/// The transfer log names each transfer by its own command (APPE and STOU are not STOR), its
/// path as the client's path (not a Rust Debug form), and an interrupted upload with the bytes
/// it received (not 0).
#[tokio::test]
async fn transfer_records_name_the_command_the_path_and_the_bytes_moved() {
    let recorded = Arc::new(RecordedTransfers::default());
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_path_buf();
    let storage = Arc::new(FsStorage::new(root.path()).unwrap());
    let mut options = test_options();
    options.transfer_observer = Some(recorded.clone());
    let server = start(options, storage, Some(root)).await;
    let mut client = server.login("alice").await;
    let mode = DataMode::ExtendedPassive;
    client.store("/a.txt", mode, b"one\n").await.unwrap();
    let prepared = client.open_data(mode).await.unwrap();
    let (_, mut stream) = client
        .transfer_command("APPE /a.txt", prepared)
        .await
        .unwrap();
    stream.send(b"two\n").await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(client.finish().await.unwrap().code.0, 226);
    assert_eq!(
        client.retrieve("/a.txt", mode).await.unwrap(),
        b"one\ntwo\n"
    );
    let prepared = client.open_data(mode).await.unwrap();
    let (_, mut stream) = client.transfer_command("STOU", prepared).await.unwrap();
    stream.send(b"unique").await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(client.finish().await.unwrap().code.0, 226);
    // An upload interrupted by ABOR once the server has written 300 000 bytes.
    let prepared = client.open_data(mode).await.unwrap();
    let (_, mut stream) = client
        .transfer_command("STOR /big", prepared)
        .await
        .unwrap();
    stream.send(&pattern(300_000)).await.unwrap();
    wait_for_file_size(&root_path.join(".ferroftp-partial.big"), 300_000).await;
    client.send_raw(b"ABOR\r\n").await.unwrap();
    assert_eq!(client.read_reply().await.unwrap().code.0, 426);
    assert_eq!(client.read_reply().await.unwrap().code.0, 226);
    // Records are made once the final reply is out: one more exchange, and all are in.
    assert_eq!(code(&mut client, "NOOP").await, 200);

    let records = recorded.0.lock().unwrap().clone();
    let summary: Vec<(&str, String, u64, TransferDirection, bool)> = records
        .iter()
        .map(|record| {
            (
                record.command,
                record.path.to_string(),
                record.bytes,
                record.direction,
                record.completion == TransferCompletion::Complete,
            )
        })
        .collect();
    let unique_name = summary[3].1.clone();
    assert_eq!(
        summary,
        [
            (
                "STOR",
                "/a.txt".to_owned(),
                4,
                TransferDirection::Upload,
                true
            ),
            (
                "APPE",
                "/a.txt".to_owned(),
                4,
                TransferDirection::Upload,
                true
            ),
            (
                "RETR",
                "/a.txt".to_owned(),
                8,
                TransferDirection::Download,
                true
            ),
            (
                "STOU",
                unique_name.clone(),
                6,
                TransferDirection::Upload,
                true
            ),
            (
                "STOR",
                "/big".to_owned(),
                300_000,
                TransferDirection::Upload,
                false
            ),
        ]
    );
    // STOU's record names the file the storage chose.
    assert_eq!(
        std::fs::read(root_path.join(unique_name.trim_start_matches('/'))).unwrap(),
        b"unique"
    );
    for record in &records {
        assert_eq!(record.user, "alice");
        assert_eq!(record.client.ip(), server.address.ip());
        assert!(!record.ascii && !record.protected);
    }
    assert!(
        records
            .iter()
            .all(|record| record.session == records[0].session)
    );
}

#[tokio::test]
async fn interrupted_upload_keeps_the_previous_version_and_can_resume() {
    let (server, root) = fs_server().await;
    let original = pattern(100_000);
    let update = pattern(500_000);
    let mut client = server.login("alice").await;
    client
        .store("/doc", DataMode::ExtendedPassive, &original)
        .await
        .unwrap();
    client
        .store("/new", DataMode::ExtendedPassive, b"")
        .await
        .unwrap();
    assert_eq!(code(&mut client, "DELE /new").await, 250);

    // Replace /doc and create /new, and die half-way through each: the control connection
    // goes first, as when a client process is killed.
    for name in ["/doc", "/new"] {
        let mut dying = server.login("alice").await;
        let prepared = dying.open_data(DataMode::ExtendedPassive).await.unwrap();
        let (_, mut stream) = dying
            .transfer_command(&format!("STOR {name}"), prepared)
            .await
            .unwrap();
        stream.send(&update[..200_000]).await.unwrap();
        // Dies only once the server has written what was sent into the hidden partial file
        // (a readiness condition, polled with a bound).
        let partial = root.join(format!(".ferroftp-partial.{}", &name[1..]));
        wait_for_file_size(&partial, 200_000).await;
        // Loopback delivers the control connection's FIN before the data connection's.
        drop(dying);
        stream.close().await.unwrap();
    }
    // A fresh session: the old version is intact, the new file is not visible yet.
    let mut check = server.login("alice").await;
    assert_eq!(
        sha256(
            &check
                .retrieve("/doc", DataMode::ExtendedPassive)
                .await
                .unwrap()
        ),
        sha256(&original)
    );
    let listing = check
        .list("NLST", None, DataMode::ExtendedPassive)
        .await
        .unwrap();
    assert_eq!(listing, b"doc\r\n", "{}", String::from_utf8_lossy(&listing));
    // The partial data is kept on disk, hidden, for a resume: SIZE of the new file reports
    // it and APPE continues it (what `curl -C - -T` does).
    let resumable: u64 = check
        .command("SIZE /new")
        .await
        .unwrap()
        .text()
        .parse()
        .unwrap();
    assert_eq!(resumable, 200_000);
    let prepared = check.open_data(DataMode::ExtendedPassive).await.unwrap();
    let (_, mut stream) = check.transfer_command("APPE /new", prepared).await.unwrap();
    stream.send(&update[resumable as usize..]).await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(check.finish().await.unwrap().code.0, 226);
    assert_eq!(
        sha256(
            &check
                .retrieve("/new", DataMode::ExtendedPassive)
                .await
                .unwrap()
        ),
        sha256(&update)
    );
    assert_eq!(std::fs::read(root.join("new")).unwrap(), update);
}

/// Polls (bounded: 20 s) until `path` holds at least `size` bytes.
async fn wait_for_file_size(path: &std::path::Path, size: u64) {
    for _ in 0..2000 {
        if std::fs::metadata(path).is_ok_and(|meta| meta.len() >= size) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never reached {size} bytes", path.display());
}

#[tokio::test]
async fn stou_creates_a_new_file_and_names_it() {
    let server = memory_server().await;
    let mut client = server.login("alice").await;
    let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
    let (preliminary, mut stream) = client.transfer_command("STOU", prepared).await.unwrap();
    let name = preliminary
        .text()
        .strip_prefix("FILE: ")
        .expect("STOU names the file")
        .to_owned();
    stream.write_all(b"unique").await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    assert_eq!(client.finish().await.unwrap().code.0, 226);
    assert_eq!(
        client
            .retrieve(&name, DataMode::ExtendedPassive)
            .await
            .unwrap(),
        b"unique"
    );
}

// ---- P2: addresses, port pool, PROXY protocol, IPv6, active source port ----

mod nat_and_proxies {
    use super::*;
    use ferroftp_proto::host_port::{parse_epsv_reply, parse_pasv_reply};
    use ferroftp_server::{
        ActiveSourcePort, AdvertiseOptions, AdvertiseTarget, ListenerOptions, ProxyProtocolOptions,
    };

    fn ip(text: &str) -> std::net::IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn pasv_announces_the_address_of_the_first_matching_rule() {
        let mut options = test_options();
        options.advertise = AdvertiseOptions {
            by_client: vec![("10.0.0.0/8".parse().unwrap(), ip("10.0.0.1"))],
            global: Some(AdvertiseTarget::Address(ip("203.0.113.7"))),
            ..AdvertiseOptions::default()
        };
        let server = start(options, Arc::new(MemoryStorage::new()), None).await;
        let mut client = server.login("alice").await;
        let reply = client.command("PASV").await.unwrap();
        assert_eq!(reply.code.0, 227);
        assert_eq!(
            *parse_pasv_reply(&reply.text()).unwrap().ip(),
            "203.0.113.7".parse::<std::net::Ipv4Addr>().unwrap()
        );

        let mut options = test_options();
        options.advertise = AdvertiseOptions {
            by_client: vec![("127.0.0.0/8".parse().unwrap(), ip("192.0.2.99"))],
            global: Some(AdvertiseTarget::Address(ip("203.0.113.7"))),
            ..AdvertiseOptions::default()
        };
        let server = start(options, Arc::new(MemoryStorage::new()), None).await;
        let mut client = server.login("alice").await;
        let reply = client.command("PASV").await.unwrap();
        assert_eq!(
            parse_pasv_reply(&reply.text()).unwrap().ip().to_string(),
            "192.0.2.99"
        );
    }

    #[tokio::test]
    async fn a_listener_address_beats_the_global_one() {
        let mut options = test_options();
        options.listeners = vec![
            ListenerOptions::new("127.0.0.1:0".parse().unwrap()),
            ListenerOptions {
                advertise: Some(ip("198.51.100.1")),
                ..ListenerOptions::new("127.0.0.1:0".parse().unwrap())
            },
        ];
        options.advertise.global = Some(AdvertiseTarget::Address(ip("203.0.113.7")));
        let server = Server::bind(options, Arc::new(MemoryStorage::new()), Arc::new(TestUsers))
            .await
            .unwrap();
        let addresses = server.local_addrs();
        let task = tokio::spawn(server.run(std::future::pending()));
        for (address, expected) in addresses.iter().zip(["203.0.113.7", "198.51.100.1"]) {
            let (mut client, _) = Client::connect(address).await.unwrap();
            client.login("alice", "secret").await.unwrap();
            let reply = client.command("PASV").await.unwrap();
            assert_eq!(
                parse_pasv_reply(&reply.text()).unwrap().ip().to_string(),
                expected
            );
        }
        task.abort();
    }

    #[tokio::test]
    async fn advertise_ports_map_the_range_one_to_one() {
        let mut options = test_options();
        let listening = options.passive_ports.clone();
        options.advertise_ports = Some(60000..=60000 + (listening.end() - listening.start()));
        let server = start(options, Arc::new(MemoryStorage::new()), None).await;
        let mut client = server.login("alice").await;
        for _ in 0..5 {
            let epsv = parse_epsv_reply(&client.command("EPSV").await.unwrap().text()).unwrap();
            assert!((60000..60020).contains(&epsv), "{epsv}");
            let pasv = parse_pasv_reply(&client.command("PASV").await.unwrap().text()).unwrap();
            assert!((60000..60020).contains(&pasv.port()), "{pasv}");
        }
    }

    #[tokio::test]
    async fn a_port_is_not_handed_to_the_same_client_right_after_its_transfer() {
        let options = ServerOptions {
            passive_ports: passive_range(2),
            ..test_options()
        };
        let server = start(options, Arc::new(MemoryStorage::new()), None).await;
        let mut client = server.login("alice").await;
        client
            .store("/f", DataMode::ExtendedPassive, b"x")
            .await
            .unwrap();
        let mut previous = None;
        for _ in 0..6 {
            let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
            let port = prepared.address().unwrap().port();
            if let Some(previous) = previous {
                assert_ne!(
                    port, previous,
                    "port reused while its connection may be in TIME_WAIT"
                );
            }
            let (_, mut stream) = client.transfer_command("RETR /f", prepared).await.unwrap();
            assert_eq!(stream.receive_all().await.unwrap(), b"x");
            assert_eq!(client.finish().await.unwrap().code.0, 226);
            previous = Some(port);
            // Both ports have now carried a connection; their cooldowns were started in
            // order, so the alternation continues (the older one is the fallback).
        }
    }

    #[tokio::test]
    async fn ipv6_epsv_and_eprt_work_and_pasv_points_to_epsv() {
        let options = ServerOptions {
            listeners: vec![ListenerOptions::new("[::1]:0".parse().unwrap())],
            ..test_options()
        };
        let server = start(options, Arc::new(MemoryStorage::new()), None).await;
        let mut client = server.login("alice").await;
        let data = pattern(100_000);
        client
            .store("/six", DataMode::ExtendedPassive, &data)
            .await
            .unwrap();
        assert_eq!(
            client
                .retrieve("/six", DataMode::ExtendedActive)
                .await
                .unwrap(),
            data
        );
        let reply = client.command("PASV").await.unwrap();
        assert_eq!(reply.code.0, 425);
        assert!(reply.text().contains("EPSV"), "{reply:?}");
        assert_eq!(code(&mut client, "EPSV 1").await, 522);
        assert_eq!(code(&mut client, "EPSV 2").await, 229);
    }

    fn proxied_options(trusted: &str) -> ServerOptions {
        ServerOptions {
            proxy_protocol: ProxyProtocolOptions {
                trusted: vec![trusted.parse().unwrap()],
                header_timeout: Duration::from_secs(5),
            },
            ..test_options()
        }
    }

    /// A control connection "through a proxy": we are the proxy (127.0.0.1, trusted) and
    /// claim the client 198.51.100.7.
    async fn connect_as_proxy(server: &TestServer) -> Client {
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        let header = format!(
            "PROXY TCP4 198.51.100.7 127.0.0.1 40000 {}\r\n",
            server.address.port()
        );
        stream.write_all(header.as_bytes()).await.unwrap();
        let mut client = Client::from_stream(stream, ClientOptions::default()).unwrap();
        assert_eq!(client.read_reply().await.unwrap().code.0, 220);
        assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
        client
    }

    #[tokio::test]
    async fn proxy_protocol_gives_the_real_client_address_to_every_check() {
        let server = start(
            proxied_options("127.0.0.0/8"),
            Arc::new(MemoryStorage::new()),
            None,
        )
        .await;
        let mut client = connect_as_proxy(&server).await;
        // Bounce protection compares with the real client, 198.51.100.7.
        assert_eq!(code(&mut client, "EPRT |1|127.0.0.1|40000|").await, 504);
        let reply = client.command("STAT").await.unwrap();
        assert!(
            reply.text().contains("Connected from 198.51.100.7"),
            "{reply:?}"
        );
        client.command("TYPE I").await.unwrap();
        // A passive data connection from the proxy must name the same client.
        let epsv = parse_epsv_reply(&client.command("EPSV").await.unwrap().text()).unwrap();
        let mut data = tokio::net::TcpStream::connect(("127.0.0.1", epsv))
            .await
            .unwrap();
        data.write_all(
            format!("PROXY TCP4 198.51.100.7 127.0.0.1 40001 {epsv}\r\nhello").as_bytes(),
        )
        .await
        .unwrap();
        data.shutdown().await.unwrap();
        client.send_raw(b"STOR /via-proxy\r\n").await.unwrap();
        assert_eq!(client.read_reply().await.unwrap().code.0, 150);
        assert_eq!(client.read_reply().await.unwrap().code.0, 226);
        let stat = client.command("SIZE /via-proxy").await.unwrap();
        assert_eq!(stat.text(), "5");
    }

    #[tokio::test]
    async fn a_proxied_data_connection_naming_another_client_is_refused() {
        let mut options = proxied_options("127.0.0.0/8");
        options.data.accept_timeout = Duration::from_secs(2);
        let server = start(options, Arc::new(MemoryStorage::new()), None).await;
        let mut client = connect_as_proxy(&server).await;
        let epsv = parse_epsv_reply(&client.command("EPSV").await.unwrap().text()).unwrap();
        let mut data = tokio::net::TcpStream::connect(("127.0.0.1", epsv))
            .await
            .unwrap();
        data.write_all(format!("PROXY TCP4 198.51.100.8 127.0.0.1 40001 {epsv}\r\n").as_bytes())
            .await
            .unwrap();
        client.send_raw(b"LIST\r\n").await.unwrap();
        // The stranger is dropped; no other connection comes within the accept timeout.
        assert_eq!(client.read_reply().await.unwrap().code.0, 425);
        let mut buffer = Vec::new();
        assert_eq!(data.read_to_end(&mut buffer).await.unwrap_or(0), 0);
    }

    #[tokio::test]
    async fn a_proxy_header_from_an_untrusted_address_is_refused() {
        let server = start(
            proxied_options("10.0.0.0/8"),
            Arc::new(MemoryStorage::new()),
            None,
        )
        .await;
        let mut client = server.connect().await;
        client
            .send_raw(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 21\r\n")
            .await
            .unwrap();
        assert_eq!(client.read_reply().await.unwrap().code.0, 421);
        // And a normal client from the same address is served as usual.
        let mut normal = server.login("alice").await;
        assert_eq!(code(&mut normal, "NOOP").await, 200);
    }

    #[tokio::test]
    async fn active_mode_can_leave_from_the_control_port_minus_one() {
        // The test runs as root in CI. The control port is chosen above the kernel's
        // ephemeral range (32768-60999), where no other test's connection takes the port
        // below it (a random listening port's neighbour often is one: outgoing connections
        // prefer the even ports, listeners the odd ones).
        for control_port in (65101..65499).step_by(2) {
            if std::net::TcpListener::bind(("127.0.0.1", control_port - 1)).is_err() {
                continue;
            }
            let options = ServerOptions {
                active_source_port: ActiveSourcePort::ControlMinusOne,
                listeners: vec![ListenerOptions::new(
                    format!("127.0.0.1:{control_port}").parse().unwrap(),
                )],
                ..test_options()
            };
            let Ok(server) = try_start(options, Arc::new(MemoryStorage::new()), None).await else {
                continue;
            };
            let source_port = control_port - 1;
            let mut client = server.login("alice").await;
            client.store("/f", DataMode::Passive, b"abc").await.unwrap();
            let prepared = client.open_data(DataMode::Active).await.unwrap();
            let (_, mut stream) = client.transfer_command("RETR /f", prepared).await.unwrap();
            assert_eq!(stream.peer_addr().unwrap().port(), source_port);
            assert_eq!(stream.receive_all().await.unwrap(), b"abc");
            assert_eq!(client.finish().await.unwrap().code.0, 226);
            return;
        }
        panic!("no control port in 65101-65499 with a free port below it");
    }
}

mod ftps {
    //! FTPS: explicit and implicit TLS, PROT P in every data mode, the require policies,
    //! data-connection session reuse, the AUTH TLS injection defence, certificate reload and
    //! client certificates. Certificates are made here with rcgen.

    use super::*;
    use ferroftp_client::{ClientTls, ServerVerification};
    use ferroftp_proto::session::{CertificateUser, TlsPolicy, TlsRequirement};
    use ferroftp_server::{
        CertificateSource, ClientCertMode, ListenerOptions, ListenerTls, TlsOptions,
    };
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::RootCertStore;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    struct Pem {
        cert: String,
        key: String,
    }

    fn server_certificate() -> Pem {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Pem {
            cert: generated.cert.pem(),
            key: generated.signing_key.serialize_pem(),
        }
    }

    struct TlsServer {
        /// Explicit listener, then implicit listener.
        explicit: SocketAddr,
        implicit: SocketAddr,
        reloader: ferroftp_server::TlsReloader,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TlsServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn tls_server(policy: TlsPolicy, tls: TlsOptions) -> TlsServer {
        let mut options = test_options();
        options.listeners = vec![
            ListenerOptions {
                tls: ListenerTls::Explicit,
                ..ListenerOptions::new("127.0.0.1:0".parse().unwrap())
            },
            ListenerOptions {
                tls: ListenerTls::Implicit,
                ..ListenerOptions::new("127.0.0.1:0".parse().unwrap())
            },
        ];
        options.session.tls = policy;
        options.tls = Some(tls);
        let server = Server::bind(options, Arc::new(MemoryStorage::new()), Arc::new(TestUsers))
            .await
            .unwrap();
        let addresses = server.local_addrs();
        let reloader = server.tls_reloader().unwrap();
        let task = tokio::spawn(server.run(std::future::pending()));
        TlsServer {
            explicit: addresses[0],
            implicit: addresses[1],
            reloader,
            task,
        }
    }

    fn tls_options(pem: &Pem) -> TlsOptions {
        TlsOptions::new(CertificateSource::Pem {
            cert: pem.cert.clone(),
            key: pem.key.clone(),
        })
    }

    fn strict_policy() -> TlsPolicy {
        TlsPolicy {
            require_control: TlsRequirement::Accounts,
            require_data: TlsRequirement::Accounts,
            ..TlsPolicy::default()
        }
    }

    fn client_options() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(20),
        }
    }

    async fn connect_plain(address: SocketAddr) -> Client {
        let (client, greeting) = Client::connect_with_options(address, client_options())
            .await
            .unwrap();
        assert_eq!(greeting.code.0, 220);
        client
    }

    /// AUTH TLS, login as alice, PBSZ 0 + PROT P.
    async fn explicit_login(address: SocketAddr, tls: ClientTls) -> Client {
        let mut client = connect_plain(address).await;
        client.auth_tls(tls).await.unwrap();
        assert!(client.is_tls());
        assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
        client.protect_data().await.unwrap();
        client
    }

    #[tokio::test]
    async fn rates_throttle_protected_transfers_in_both_modes() {
        let server = tls_server(TlsPolicy::default(), tls_options(&server_certificate())).await;
        let mut alice = explicit_login(server.explicit, ClientTls::accept_any()).await;
        let data = pattern(250_000);
        alice
            .store("/big", DataMode::ExtendedPassive, &data)
            .await
            .unwrap();
        let mut slow = connect_plain(server.explicit).await;
        slow.auth_tls(ClientTls::accept_any()).await.unwrap();
        assert_eq!(slow.login("slow", "secret").await.unwrap().code.0, 230);
        slow.protect_data().await.unwrap();
        // 100 kB/s with a one-second burst: 250 kB take at least 1.5 s (a lower bound only).
        for mode in [DataMode::ExtendedPassive, DataMode::Active] {
            let started = std::time::Instant::now();
            let back = slow.retrieve("/big", mode).await.unwrap();
            assert!(started.elapsed() >= Duration::from_millis(1400), "{mode:?}");
            assert_eq!(sha256(&back), sha256(&data), "{mode:?}");
        }
    }

    #[tokio::test]
    async fn explicit_tls_round_trip_in_every_data_mode_is_byte_exact() {
        let server = tls_server(strict_policy(), tls_options(&server_certificate())).await;
        let mut client = explicit_login(server.explicit, ClientTls::accept_any()).await;
        let feat = client.command("FEAT").await.unwrap();
        for feature in ["AUTH TLS", "PBSZ", "PROT"] {
            assert!(feat.lines.iter().any(|l| l == feature), "{feat:?}");
        }
        for (index, mode) in DataMode::ALL.into_iter().enumerate() {
            for size in [0usize, 1 << 20] {
                let data = pattern(size + index);
                let name = format!("/tls-{index}-{size}");
                client.store(&name, mode, &data).await.unwrap();
                let back = client.retrieve(&name, mode).await.unwrap();
                assert_eq!(sha256(&back), sha256(&data), "{mode:?} {size}");
            }
        }
        let listing = client
            .list("NLST", None, DataMode::ExtendedPassive)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&listing).contains("tls-0-0"));
        assert_eq!(client.quit().await.unwrap().code.0, 221);
    }

    /// Failed TLS handshakes count against the address (weight 1 of 15 by default): a
    /// scanner speaking plain text to the implicit listener is banned on every listener.
    #[tokio::test]
    async fn failed_tls_handshakes_ban_an_address_on_every_listener() {
        let server = tls_server(strict_policy(), tls_options(&server_certificate())).await;
        let connect_from_10 = |address: SocketAddr| async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.10:0".parse().unwrap()).unwrap();
            socket.connect(address).await
        };
        for _ in 0..15 {
            let mut stream = connect_from_10(server.implicit).await.unwrap();
            stream.write_all(b"USER alice\r\n").await.unwrap();
            let mut rest = Vec::new();
            // The server ends the failed handshake (an alert, then close, or a reset).
            let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
                .await
                .expect("the failed handshake did not end");
        }
        let mut received = Vec::new();
        if let Ok(mut stream) = connect_from_10(server.explicit).await {
            let read =
                tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
                    .await
                    .expect("a banned address was not closed");
            assert!(read.is_ok() || received.is_empty(), "{read:?}");
        }
        assert_eq!(received, b"");
        connect_plain(server.explicit).await;
    }

    #[tokio::test]
    async fn implicit_listener_speaks_tls_first_and_protects_data_by_default() {
        let server = tls_server(strict_policy(), tls_options(&server_certificate())).await;
        let (mut client, greeting) = Client::connect_implicit_tls(
            server.implicit,
            client_options(),
            ClientTls::accept_any(),
        )
        .await
        .unwrap();
        assert_eq!(greeting.code.0, 220);
        assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
        let data = pattern(300_000);
        client
            .store("/implicit", DataMode::Passive, &data)
            .await
            .unwrap();
        let back = client
            .retrieve("/implicit", DataMode::Active)
            .await
            .unwrap();
        assert_eq!(sha256(&back), sha256(&data));
        // A plain client on the implicit port gets no greeting it could read.
        let plain = Client::connect_with_options(
            server.implicit,
            ClientOptions {
                timeout: Duration::from_secs(2),
            },
        )
        .await;
        assert!(plain.is_err());
    }

    #[tokio::test]
    async fn pass_over_plain_text_is_refused_when_tls_is_required() {
        let server = tls_server(strict_policy(), tls_options(&server_certificate())).await;
        let mut client = connect_plain(server.explicit).await;
        let refused = client.command("USER alice").await.unwrap();
        assert_eq!(refused.code.0, 530);
        assert_eq!(
            refused.text(),
            "TLS required for this account: send AUTH TLS first (tls.require = accounts)"
        );
        assert_eq!(code(&mut client, "PASS secret").await, 530);
        assert_eq!(code(&mut client, "LIST").await, 530);
        // Clear data is refused too, with its own reply.
        let mut client = explicit_login(server.explicit, ClientTls::accept_any()).await;
        assert_eq!(code(&mut client, "PROT C").await, 534);
    }

    #[tokio::test]
    async fn a_data_connection_that_does_not_resume_is_refused_unless_exempt() {
        let server = tls_server(strict_policy(), tls_options(&server_certificate())).await;
        let mut client = explicit_login(
            server.explicit,
            ClientTls::accept_any().without_data_resumption(),
        )
        .await;
        for mode in [DataMode::ExtendedPassive, DataMode::Active] {
            let error = client.retrieve("/missing-or-not", mode).await.unwrap_err();
            // The file does not exist: 550 comes before any data connection.
            assert_eq!(error.unexpected_reply().map(|r| r.code.0), Some(550));
            let error = client.store("/x", mode, b"data").await.unwrap_err();
            let reply = error.unexpected_reply().expect("a reply").clone();
            assert_eq!(reply.code.0, 522, "{mode:?}: {reply:?}");
            assert!(reply.text().contains("tls.require_reuse"), "{reply:?}");
        }
        // The same client, exempted by name, succeeds.
        let exempt = TlsPolicy {
            reuse_exempt_users: vec!["alice".to_owned()],
            ..strict_policy()
        };
        let server = tls_server(exempt, tls_options(&server_certificate())).await;
        let mut client = explicit_login(
            server.explicit,
            ClientTls::accept_any().without_data_resumption(),
        )
        .await;
        client
            .store("/x", DataMode::ExtendedPassive, b"data")
            .await
            .unwrap();
        assert_eq!(
            client.retrieve("/x", DataMode::Active).await.unwrap(),
            b"data"
        );
        // And by client network.
        let exempt = TlsPolicy {
            reuse_exempt_clients: vec![
                ferroftp_proto::Cidr::new("127.0.0.0".parse().unwrap(), 8).unwrap(),
            ],
            ..strict_policy()
        };
        let server = tls_server(exempt, tls_options(&server_certificate())).await;
        let mut client = explicit_login(
            server.explicit,
            ClientTls::accept_any().without_data_resumption(),
        )
        .await;
        client
            .store("/y", DataMode::Passive, b"data")
            .await
            .unwrap();
    }

    /// A client that verifies the test certificate, speaks only `versions` and resumes TLS
    /// 1.2 sessions as `tls12` says.
    fn client_with_versions(
        pem: &Pem,
        versions: &[&'static rustls::SupportedProtocolVersion],
        tls12: rustls::client::Tls12Resumption,
    ) -> ClientTls {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.resumption = rustls::client::Resumption::default().tls12_resumption(tls12);
        ClientTls::from_config(
            Arc::new(config),
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        )
    }

    #[tokio::test]
    async fn tls12_data_connections_resume_by_session_id_and_by_ticket() {
        use rustls::client::Tls12Resumption;
        let pem = server_certificate();
        let server = tls_server(strict_policy(), tls_options(&pem)).await;
        for resumption in [
            Tls12Resumption::SessionIdOnly,
            Tls12Resumption::SessionIdOrTickets,
        ] {
            let tls = client_with_versions(&pem, &[&rustls::version::TLS12], resumption);
            let mut client = explicit_login(server.explicit, tls).await;
            for (round, mode) in [
                DataMode::ExtendedPassive,
                DataMode::Active,
                DataMode::Passive,
                DataMode::ExtendedPassive,
            ]
            .into_iter()
            .enumerate()
            {
                let data = pattern(70_000 + round);
                let name = format!("/tls12-{resumption:?}-{round}");
                client.store(&name, mode, &data).await.unwrap();
                client.store(&name, mode, &data).await.unwrap();
                assert_eq!(client.retrieve(&name, mode).await.unwrap(), data);
                assert_eq!(client.retrieve(&name, mode).await.unwrap(), data);
            }
        }
    }

    /// Clients such as rclone share one session cache between parallel control connections
    /// and resume the newest session, issued on another control connection's data
    /// connection: accepted for the same user from the same address, refused for another
    /// user, on both TLS versions.
    #[tokio::test]
    async fn sessions_of_another_control_connection_of_the_same_user_are_accepted() {
        use rustls::client::Tls12Resumption;
        let pem = server_certificate();
        let server = tls_server(strict_policy(), tls_options(&pem)).await;
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let shared =
                client_with_versions(&pem, &[version], Tls12Resumption::SessionIdOrTickets);
            let mut first = explicit_login(server.explicit, shared.clone()).await;
            first.command("MKD /home").await.unwrap();
            first.command("MKD /home/bob").await.unwrap();
            let data = pattern(5000);
            first
                .store("/shared", DataMode::ExtendedPassive, &data)
                .await
                .unwrap();
            assert_eq!(
                first
                    .retrieve("/shared", DataMode::ExtendedPassive)
                    .await
                    .unwrap(),
                data
            );
            // Its own control connection (a fresh session cache), its data connections from
            // the first connection's cache.
            let fresh = || {
                client_with_versions(&pem, &[version], Tls12Resumption::SessionIdOrTickets)
                    .with_data_sessions_of(&shared)
            };
            let mut second = explicit_login(server.explicit, fresh()).await;
            for mode in [DataMode::ExtendedPassive, DataMode::Active] {
                assert_eq!(second.retrieve("/shared", mode).await.unwrap(), data);
                second.store("/shared-2", mode, &data).await.unwrap();
            }
            // The first connection closed: its sessions still serve the same user.
            first.quit().await.unwrap();
            drop(first);
            assert_eq!(
                second
                    .retrieve("/shared-2", DataMode::ExtendedPassive)
                    .await
                    .unwrap(),
                data
            );

            let mut bob = connect_plain(server.explicit).await;
            bob.auth_tls(fresh()).await.unwrap();
            assert_eq!(bob.login("bob", "secret").await.unwrap().code.0, 230);
            bob.protect_data().await.unwrap();
            let error = bob
                .store("/stolen", DataMode::ExtendedPassive, b"x")
                .await
                .unwrap_err();
            let reply = error.unexpected_reply().expect("a reply").clone();
            assert_eq!(reply.code.0, 522, "{version:?}: {reply:?}");
        }
    }

    /// rclone opens control connections while it transfers, and its shared cache hands out
    /// the newest session at once, which may be that of a connection still logging in: the
    /// check waits for that login and decides on it.
    #[tokio::test]
    async fn a_session_of_a_connection_still_logging_in_counts_once_it_logs_in() {
        use rustls::client::Tls12Resumption;
        let pem = server_certificate();
        let server = tls_server(strict_policy(), tls_options(&pem)).await;
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            for (later, accepted) in [("alice", true), ("bob", false), ("nobody", false)] {
                let shared =
                    client_with_versions(&pem, &[version], Tls12Resumption::SessionIdOrTickets);
                let mut first = explicit_login(server.explicit, shared.clone()).await;
                first
                    .store("/early", DataMode::ExtendedPassive, b"early")
                    .await
                    .unwrap();
                // The second connection's session becomes the newest in the shared cache
                // (NOOP reads the TLS 1.3 tickets that follow the handshake).
                let mut second = connect_plain(server.explicit).await;
                second.auth_tls(shared.clone()).await.unwrap();
                assert_eq!(second.command("NOOP").await.unwrap().code.0, 200);
                // The second connection logs in (or leaves) only once our side of the data
                // connection's handshake is done: the server is checking, or about to.
                let prepared = first.open_data(DataMode::ExtendedPassive).await.unwrap();
                let (opening, mut data) = first
                    .transfer_command("RETR /early", prepared)
                    .await
                    .unwrap();
                assert_eq!(opening.code.0, 150);
                match later {
                    "nobody" => {
                        second.quit().await.unwrap();
                    }
                    user => {
                        assert_eq!(second.login(user, "secret").await.unwrap().code.0, 230);
                    }
                }
                let received = data.receive_all().await;
                drop(data);
                let reply = first.finish().await.unwrap();
                if accepted {
                    assert_eq!(received.unwrap(), b"early", "{version:?} {later}");
                    assert_eq!(reply.code.0, 226, "{version:?} {later}: {reply:?}");
                } else {
                    assert_eq!(reply.code.0, 522, "{version:?} {later}: {reply:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn resumed_sessions_carry_many_transfers() {
        let server = tls_server(strict_policy(), tls_options(&server_certificate())).await;
        let mut client = explicit_login(server.explicit, ClientTls::accept_any()).await;
        for round in 0..6 {
            let data = pattern(1000 + round);
            client
                .store("/many", DataMode::ExtendedPassive, &data)
                .await
                .unwrap();
            assert_eq!(
                client
                    .retrieve("/many", DataMode::ExtendedPassive)
                    .await
                    .unwrap(),
                data
            );
        }
    }

    #[tokio::test]
    async fn commands_pipelined_after_auth_tls_are_discarded() {
        let server = tls_server(TlsPolicy::default(), tls_options(&server_certificate())).await;
        let mut setup = explicit_login(server.explicit, ClientTls::accept_any()).await;
        setup
            .store("/victim", DataMode::ExtendedPassive, b"keep me")
            .await
            .unwrap();

        let mut client = connect_plain(server.explicit).await;
        // One write: AUTH TLS with commands behind it, as an attacker in the path could
        // inject them into the plain-text part of the connection (CVE-2011-0411).
        client
            .send_raw(b"AUTH TLS\r\nUSER alice\r\nPASS secret\r\nDELE /victim\r\n")
            .await
            .unwrap();
        assert_eq!(client.read_reply().await.unwrap().code.0, 234);
        client
            .upgrade_to_tls(ClientTls::accept_any())
            .await
            .unwrap();
        // None of them ran: not logged in, and the file is still there.
        assert_eq!(code(&mut client, "PWD").await, 530);
        assert_eq!(
            setup
                .retrieve("/victim", DataMode::ExtendedPassive)
                .await
                .unwrap(),
            b"keep me"
        );
    }

    /// A certificate for `localhost` that clients trust by having it as their only root.
    fn root_store(pem: &Pem) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.cert.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    }

    async fn verified_tls_session(
        address: SocketAddr,
        trusted: &Pem,
    ) -> Result<Client, ClientError> {
        let tls = ClientTls::new(
            ServerVerification::Roots(root_store(trusted)),
            "localhost",
            None,
        )?;
        let mut client = connect_plain(address).await;
        client.auth_tls(tls).await?;
        Ok(client)
    }

    #[tokio::test]
    async fn a_certificate_replaced_on_disk_is_used_without_a_restart() {
        let directory = tempfile::tempdir().unwrap();
        let cert_path = directory.path().join("cert.pem");
        let key_path = directory.path().join("key.pem");
        let first = server_certificate();
        std::fs::write(&cert_path, &first.cert).unwrap();
        std::fs::write(&key_path, &first.key).unwrap();
        let mut options = TlsOptions::new(CertificateSource::Files {
            cert: cert_path.clone(),
            key: key_path.clone(),
        });
        options.reload_check = Some(Duration::from_millis(100));
        let server = tls_server(TlsPolicy::default(), options).await;

        let mut old_session = verified_tls_session(server.explicit, &first).await.unwrap();
        assert_eq!(
            old_session.login("alice", "secret").await.unwrap().code.0,
            230
        );

        // Replaced on disk (key first, then certificate, as an ACME client might): picked up
        // by the file check, no signal, no restart.
        let second = server_certificate();
        std::fs::write(&key_path, &second.key).unwrap();
        std::fs::write(&cert_path, &second.cert).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if verified_tls_session(server.explicit, &second).await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "new certificate never served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(verified_tls_session(server.explicit, &first).await.is_err());
        // The session opened before the change goes on.
        assert_eq!(code(&mut old_session, "NOOP").await, 200);

        // Broken files are refused by an explicit reload and the current certificate stays.
        std::fs::write(&cert_path, "not a certificate").unwrap();
        assert!(server.reloader.reload().is_err());
        assert!(verified_tls_session(server.explicit, &second).await.is_ok());
    }

    struct ClientCa {
        pem: String,
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    fn client_ca() -> ClientCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ferroftp test client CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        ClientCa {
            pem: issuer.pem(),
            issuer,
        }
    }

    fn client_certificate(
        ca: &ClientCa,
        common_name: &str,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        (vec![cert.der().clone()], key)
    }

    #[tokio::test]
    async fn client_certificates_are_required_and_name_the_account() {
        let directory = tempfile::tempdir().unwrap();
        let ca = client_ca();
        let ca_path = directory.path().join("client-ca.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        let mut options = tls_options(&server_certificate());
        options.client_ca = Some(ca_path);
        options.client_cert = ClientCertMode::Required;
        let policy = TlsPolicy {
            certificate_user: CertificateUser::CommonName,
            ..strict_policy()
        };
        let server = tls_server(policy, options).await;

        // Without a certificate the handshake fails.
        let mut client = connect_plain(server.explicit).await;
        let refused = async {
            client.auth_tls(ClientTls::accept_any()).await?;
            // TLS 1.3: the client learns of the refusal at its first read.
            client.command("NOOP").await
        }
        .await;
        assert!(refused.is_err(), "{refused:?}");

        // A certificate from another CA is refused too.
        let stranger = client_ca();
        let tls = ClientTls::new(
            ServerVerification::AcceptAny,
            "localhost",
            Some(client_certificate(&stranger, "alice")),
        )
        .unwrap();
        let mut client = connect_plain(server.explicit).await;
        let refused = async {
            client.auth_tls(tls).await?;
            client.command("NOOP").await
        }
        .await;
        assert!(refused.is_err(), "{refused:?}");

        // With alice's certificate: only alice may log in, and transfers work (the data
        // connections present it again or resume the session that has it).
        let tls = ClientTls::new(
            ServerVerification::AcceptAny,
            "localhost",
            Some(client_certificate(&ca, "alice")),
        )
        .unwrap();
        let mut client = connect_plain(server.explicit).await;
        client.auth_tls(tls).await.unwrap();
        let reply = client.command("USER bob").await.unwrap();
        assert_eq!(
            (reply.code.0, reply.text()),
            (530, "Your client certificate is for user alice".to_owned())
        );
        assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
        client.protect_data().await.unwrap();
        client
            .store("/mtls", DataMode::ExtendedPassive, b"signed")
            .await
            .unwrap();
        assert_eq!(
            client.retrieve("/mtls", DataMode::Active).await.unwrap(),
            b"signed"
        );
    }
}

#[tokio::test]
async fn local_files_are_sent_byte_exact_with_and_without_zero_copy() {
    let (server, _root) = fs_server().await;
    let mut client = server.login("alice").await;
    let data = pattern(3 << 20);
    client
        .store("/big", DataMode::ExtendedPassive, &data)
        .await
        .unwrap();
    // Binary, plain: sendfile; from an offset too (REST).
    for mode in DataMode::ALL {
        let back = client.retrieve("/big", mode).await.unwrap();
        assert_eq!(sha256(&back), sha256(&data), "{mode:?}");
    }
    assert_eq!(code(&mut client, "REST 1234567").await, 350);
    let tail = client
        .retrieve("/big", DataMode::ExtendedPassive)
        .await
        .unwrap();
    assert_eq!(sha256(&tail), sha256(&data[1_234_567..]));
    // ASCII: the converting stream, from the start and from an offset.
    client
        .store("/text", DataMode::ExtendedPassive, b"a\nb\n")
        .await
        .unwrap();
    assert_eq!(code(&mut client, "TYPE A").await, 200);
    assert_eq!(
        client
            .retrieve("/text", DataMode::ExtendedPassive)
            .await
            .unwrap(),
        b"a\r\nb\r\n"
    );
    assert_eq!(code(&mut client, "REST 2").await, 350);
    assert_eq!(
        client
            .retrieve("/text", DataMode::ExtendedPassive)
            .await
            .unwrap(),
        b"b\r\n"
    );
}

/// The server runs a download as far as it can before writing its 150, so a small file's
/// 150 and 226 leave together. A download that cannot finish at once must still send its
/// 150 before it waits: this client reads the 150 before any data, and 32 MiB outgrow the
/// socket buffers on both ends, so holding the 150 back would hang here. Each data mode,
/// and a small file after each large one.
#[tokio::test]
async fn the_150_reply_never_waits_for_a_download_the_client_has_not_read() {
    let (server, _root) = fs_server().await;
    let mut client = server.login("alice").await;
    let data = pattern(32 << 20);
    client
        .store("/large", DataMode::ExtendedPassive, &data)
        .await
        .unwrap();
    client
        .store("/small", DataMode::ExtendedPassive, b"small")
        .await
        .unwrap();
    for mode in DataMode::ALL {
        let back = client.retrieve("/large", mode).await.unwrap();
        assert_eq!(sha256(&back), sha256(&data), "{mode:?}");
        assert_eq!(client.retrieve("/small", mode).await.unwrap(), b"small");
    }
}

#[tokio::test]
async fn sessions_on_session_threads_transfer_byte_exact_and_drain_at_shutdown() {
    let root = tempfile::tempdir().unwrap();
    let storage = Arc::new(FsStorage::new(root.path()).unwrap());
    let threads = Arc::new(SessionThreads::start(2).unwrap());
    assert_eq!(threads.len(), 2);
    let server = Server::bind(test_options(), storage, Arc::new(TestUsers))
        .await
        .unwrap()
        .with_session_threads(Arc::clone(&threads));
    let address = server.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    // Several sessions at once, each upload through the blocking pool of the thread that
    // accepted its session.
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(login_to(address, "alice").await);
    }
    let transfers = clients.into_iter().enumerate().map(|(index, mut client)| {
        tokio::spawn(async move {
            let mode = DataMode::ALL[index % DataMode::ALL.len()];
            let data = pattern(100_000 + index);
            let name = format!("/thread-{index}");
            client.store(&name, mode, &data).await.unwrap();
            let back = client.retrieve(&name, mode).await.unwrap();
            assert_eq!(sha256(&back), sha256(&data), "{mode:?}");
            client
        })
    });
    let mut clients = Vec::new();
    for transfer in transfers {
        clients.push(transfer.await.unwrap());
    }

    // Shutdown stops the accept loops on every thread and drains: the idle sessions are
    // closed with 421, and once `run` returns the listening socket is closed.
    stop.send(()).unwrap();
    running.await.unwrap();
    let refused = tokio::net::TcpStream::connect(address).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    let mut client = clients.pop().unwrap();
    match client.command("NOOP").await {
        Ok(reply) => assert_eq!(reply.code.0, 421, "{reply:?}"),
        Err(error) => panic!("the 421 of the shutdown was not received: {error}"),
    }

    drop(threads);
    assert!(client.command("NOOP").await.is_err());
}

/// A server on an fs root whose drain and immediate stop the test triggers.
struct DrainableServer {
    address: SocketAddr,
    root: tempfile::TempDir,
    handle: ferroftp_server::ServerHandle,
    drain: Option<tokio::sync::oneshot::Sender<()>>,
    running: tokio::task::JoinHandle<()>,
}

async fn drainable_server(options: ServerOptions) -> DrainableServer {
    let root = tempfile::tempdir().unwrap();
    let storage = Arc::new(FsStorage::new(root.path()).unwrap());
    let server = Server::bind(options, storage, Arc::new(TestUsers))
        .await
        .unwrap();
    let address = server.local_addrs()[0];
    let handle = server.handle();
    let (drain, drained) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(
        async {
            let _ = drained.await;
        },
        std::future::pending(),
    ));
    DrainableServer {
        address,
        root,
        handle,
        drain: Some(drain),
        running,
    }
}

#[tokio::test]
async fn shutdown_lets_a_running_download_finish_then_closes_every_session_with_421() {
    let mut server = drainable_server(test_options()).await;
    let data = pattern(8 << 20);
    std::fs::write(server.root.path().join("big"), &data).unwrap();
    let mut downloading = login_to(server.address, "alice").await;
    let mut idle = login_to(server.address, "alice").await;
    let prepared = downloading.open_data(DataMode::Passive).await.unwrap();
    let (reply, stream) = downloading
        .transfer_command("RETR big", prepared)
        .await
        .unwrap();
    assert_eq!(reply.code.0, 150);
    let mut stream = stream.into_inner();
    let mut received = vec![0u8; 64 * 1024];
    stream.read_exact(&mut received).await.unwrap();

    server.drain.take().unwrap().send(()).unwrap();
    // The idle session is told at once, after the listeners closed.
    assert_eq!(idle.read_reply().await.unwrap().code.0, 421);
    assert_eq!(
        tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert!(server.handle.is_draining());
    // The download goes on to its last byte, then 226 and 421.
    stream.read_to_end(&mut received).await.unwrap();
    assert_eq!(sha256(&received), sha256(&data));
    assert_eq!(downloading.finish().await.unwrap().code.0, 226);
    assert_eq!(downloading.read_reply().await.unwrap().code.0, 421);
    server.running.await.unwrap();
    assert_eq!(server.handle.open_sessions(), 0);
}

#[tokio::test]
async fn shutdown_grace_over_aborts_an_upload_with_426_and_keeps_the_previous_version() {
    let mut options = test_options();
    options.shutdown_grace = Duration::from_millis(300);
    let mut server = drainable_server(options).await;
    std::fs::write(server.root.path().join("doc"), b"previous version").unwrap();
    let mut uploading = login_to(server.address, "alice").await;
    let prepared = uploading.open_data(DataMode::Passive).await.unwrap();
    let (reply, mut stream) = uploading
        .transfer_command("STOR doc", prepared)
        .await
        .unwrap();
    assert_eq!(reply.code.0, 150);
    stream.send(&pattern(100_000)).await.unwrap();

    server.drain.take().unwrap().send(()).unwrap();
    // The client never finishes: the grace period ends it.
    let aborted = uploading.read_reply().await.unwrap();
    assert_eq!(aborted.code.0, 426, "{aborted:?}");
    assert_eq!(uploading.read_reply().await.unwrap().code.0, 421);
    server.running.await.unwrap();
    assert_eq!(
        std::fs::read(server.root.path().join("doc")).unwrap(),
        b"previous version"
    );
    drop(stream);
}

fn pasv_address(reply: &Reply) -> String {
    let text = reply.text();
    let inside = &text[text.find('(').unwrap() + 1..text.find(')').unwrap()];
    inside.split(',').take(4).collect::<Vec<_>>().join(".")
}

#[tokio::test]
async fn reload_changes_the_next_pasv_of_an_open_session_and_a_failed_one_changes_nothing() {
    let mut options = test_options();
    options.advertise.global = Some(ferroftp_server::AdvertiseTarget::Address(
        "198.51.100.1".parse().unwrap(),
    ));
    let server = drainable_server(options.clone()).await;
    let mut client = login_to(server.address, "alice").await;
    let before = client.command("PASV").await.unwrap();
    assert_eq!(pasv_address(&before), "198.51.100.1");

    options.advertise.global = Some(ferroftp_server::AdvertiseTarget::Address(
        "198.51.100.2".parse().unwrap(),
    ));
    let report = server
        .handle
        .reload(options.clone(), Arc::new(TestUsers))
        .await
        .unwrap();
    assert!(report.needs_restart.is_empty(), "{report:?}");
    let after = client.command("PASV").await.unwrap();
    assert_eq!(pasv_address(&after), "198.51.100.2");
    assert_eq!(client.command("NOOP").await.unwrap().code.0, 200);

    // A configuration that cannot be served (a certificate file that does not exist) is
    // refused whole: the advertised address stays.
    let mut broken = options.clone();
    broken.advertise.global = Some(ferroftp_server::AdvertiseTarget::Address(
        "198.51.100.3".parse().unwrap(),
    ));
    broken.tls = Some(ferroftp_server::TlsOptions::new(
        ferroftp_server::CertificateSource::Files {
            cert: server.root.path().join("missing.pem"),
            key: server.root.path().join("missing.key"),
        },
    ));
    assert!(
        server
            .handle
            .reload(broken, Arc::new(TestUsers))
            .await
            .is_err()
    );
    let unchanged = client.command("PASV").await.unwrap();
    assert_eq!(pasv_address(&unchanged), "198.51.100.2");

    // A listener's address needs a restart: reported, kept.
    let mut moved = options;
    moved.listeners[0].address = "127.0.0.1:1".parse().unwrap();
    let report = server
        .handle
        .reload(moved, Arc::new(TestUsers))
        .await
        .unwrap();
    assert_eq!(report.needs_restart, ["server.listeners"]);
    assert!(
        login_to(server.address, "alice")
            .await
            .command("NOOP")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn site_chmod_sets_modes_on_disk_within_the_mask() {
    use std::os::unix::fs::PermissionsExt;
    let (server, root) = fs_server().await;
    let mode_of = |name: &str| {
        std::fs::metadata(root.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let mut alice = server.login("alice").await;
    alice
        .store("/script.sh", DataMode::ExtendedPassive, b"#!/bin/sh\n")
        .await
        .unwrap();
    assert_eq!(code(&mut alice, "MKD /private").await, 257);
    let reply = alice.command("SITE CHMOD 755 /script.sh").await.unwrap();
    assert_eq!(
        (reply.code.0, reply.text().as_str()),
        (200, "SITE CHMOD command successful")
    );
    assert_eq!(mode_of("script.sh"), 0o755);
    assert_eq!(code(&mut alice, "SITE CHMOD 0700 private").await, 200);
    assert_eq!(mode_of("private"), 0o700);
    // The default mask (storage.chmod_mask = 0o755) keeps group and other write off.
    assert_eq!(code(&mut alice, "SITE CHMOD 666 /script.sh").await, 200);
    assert_eq!(mode_of("script.sh"), 0o644);
    // Special bits are refused, not stripped: the file keeps its mode.
    assert_eq!(code(&mut alice, "SITE CHMOD 4755 /script.sh").await, 550);
    assert_eq!(mode_of("script.sh"), 0o644);
    assert_eq!(code(&mut alice, "SITE CHMOD 644 /missing").await, 550);
    assert_eq!(code(&mut alice, "SITE CHMOD 644").await, 501);
    assert_eq!(code(&mut alice, "SITE CHMOD x /script.sh").await, 501);

    let mut reader = server.login("reader").await;
    assert_eq!(code(&mut reader, "SITE CHMOD 600 /script.sh").await, 550);
    assert_eq!(mode_of("script.sh"), 0o644);
}

#[tokio::test]
async fn site_chmod_on_a_storage_without_modes_is_504() {
    let server = memory_server().await;
    let mut alice = server.login("alice").await;
    alice
        .store("/f", DataMode::ExtendedPassive, b"x")
        .await
        .unwrap();
    let reply = alice.command("SITE CHMOD 644 /f").await.unwrap();
    assert_eq!(
        (reply.code.0, reply.text().as_str()),
        (504, "SITE CHMOD not supported by this storage")
    );
}

#[tokio::test]
async fn a_missing_home_is_created_at_the_first_login() {
    let (server, root) = fs_server().await;
    assert!(!root.join("home").exists());
    // bob's home is /home/bob: nothing has made it.
    let mut bob = server.login("bob").await;
    assert!(root.join("home/bob").is_dir());
    bob.store("/mine", DataMode::ExtendedPassive, b"bob's")
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("home/bob/mine")).unwrap(), b"bob's");
    let listing = bob
        .list("LIST", Some("/"), DataMode::ExtendedPassive)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing).contains("mine"),
        "{listing:?}"
    );
    assert_eq!(code(&mut bob, "PWD").await, 257);
    // Later logins find it; its contents stay.
    drop(bob);
    let mut again = server.login("bob").await;
    assert_eq!(code(&mut again, "SIZE /mine").await, 213);
}

/// The code of the reply that refused a transfer command (sent after EPSV, answered before
/// any data connection is used).
async fn refused_transfer_code(client: &mut Client, line: &str) -> u16 {
    assert_eq!(code(client, "EPSV").await, 229);
    code(client, line).await
}

#[tokio::test]
async fn a_symlink_in_a_home_cannot_lead_into_another_home() {
    let (server, root) = fs_server().await;
    let bob = root.join("home/bob");
    std::fs::create_dir_all(bob.join("d")).unwrap();
    std::fs::write(bob.join("secret"), b"bob only").unwrap();
    std::fs::create_dir_all(root.join("home/carol")).unwrap();
    std::os::unix::fs::symlink("../bob", root.join("home/carol/rel_bob")).unwrap();
    std::os::unix::fs::symlink("rel_bob/secret", root.join("home/carol/via_link")).unwrap();
    let mut carol = server.login("carol").await;
    carol
        .store("/mine", DataMode::ExtendedPassive, b"carol's")
        .await
        .unwrap();
    // Every verb that reaches the storage, through the link to a directory and through a
    // link to a file beyond it: the kernel refuses the walk out of the home (550). (STOU
    // works in the working directory, which CWD cannot move through the link.)
    for line in [
        "SIZE /rel_bob/secret",
        "SIZE /via_link",
        "MDTM /rel_bob/secret",
        "MLST /rel_bob/secret",
        "CWD /rel_bob",
        "DELE /rel_bob/secret",
        "RMD /rel_bob/d",
        "MKD /rel_bob/new",
        "MFMT 20200102030405 /rel_bob/secret",
        "SITE CHMOD 600 /rel_bob/secret",
        "RNFR /rel_bob/secret",
        "STAT /rel_bob",
        "STAT /rel_bob/secret",
    ] {
        assert_eq!(code(&mut carol, line).await, 550, "{line}");
    }
    assert_eq!(code(&mut carol, "RNFR /mine").await, 350);
    assert_eq!(code(&mut carol, "RNTO /rel_bob/stolen").await, 550);
    for line in [
        "RETR /rel_bob/secret",
        "RETR /via_link",
        "STOR /rel_bob/new",
        "STOR /rel_bob/secret",
        "APPE /rel_bob/secret",
        "LIST /rel_bob",
        "NLST /rel_bob",
        "MLSD /rel_bob",
    ] {
        assert_eq!(refused_transfer_code(&mut carol, line).await, 550, "{line}");
    }
    // REST + STOR and SIZE of a partial go the same way.
    assert_eq!(code(&mut carol, "REST 3").await, 350);
    assert_eq!(
        refused_transfer_code(&mut carol, "STOR /rel_bob/secret").await,
        550
    );
    // Nothing of bob's changed, nothing was added, no partial file was left there.
    assert_eq!(std::fs::read(bob.join("secret")).unwrap(), b"bob only");
    let mut names: Vec<_> = std::fs::read_dir(&bob)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "secret"]);
    assert!(std::fs::read_dir(bob.join("d")).unwrap().next().is_none());
    // The link itself is listed as what it is, a link, its target unexamined.
    let listing = carol
        .list("MLSD", Some("/"), DataMode::ExtendedPassive)
        .await
        .unwrap();
    let listing = String::from_utf8(listing).unwrap();
    assert!(listing.contains("; mine\r\n"), "{listing}");
    let link_line = listing
        .lines()
        .find(|line| line.ends_with(" rel_bob"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(!link_line.contains("type=dir;"), "{listing}");
    // Links that stay inside the home still work.
    std::os::unix::fs::symlink("mine", root.join("home/carol/alias")).unwrap();
    assert_eq!(
        carol
            .retrieve("/alias", DataMode::ExtendedPassive)
            .await
            .unwrap(),
        b"carol's"
    );
    // alice, whose home is the root, still reaches bob's directory through the same link.
    let mut alice = server.login("alice").await;
    assert_eq!(
        code(&mut alice, "SIZE /home/carol/rel_bob/secret").await,
        213
    );
}

#[tokio::test]
async fn a_modification_time_before_1970_is_kept_and_listed() {
    let (server, _root) = fs_server().await;
    let mut client = server.login("alice").await;
    client
        .store("/old", DataMode::ExtendedPassive, b"old")
        .await
        .unwrap();
    client
        .store("/new", DataMode::ExtendedPassive, b"new")
        .await
        .unwrap();
    assert_eq!(code(&mut client, "MFMT 19691231235959 /old").await, 213);
    let reply = client.command("MDTM /old").await.unwrap();
    assert_eq!((reply.code.0, reply.text()), (213, "19691231235959".into()));
    assert_eq!(code(&mut client, "SIZE /old").await, 213);
    let reply = client.command("MLST /old").await.unwrap();
    assert_eq!(reply.code.0, 250);
    assert!(reply.text().contains("modify=19691231235959;"), "{reply:?}");
    for verb in ["LIST", "NLST", "MLSD"] {
        let listing = client
            .list(verb, Some("/"), DataMode::ExtendedPassive)
            .await
            .unwrap();
        let listing = String::from_utf8(listing).unwrap();
        assert!(
            listing.contains("old") && listing.contains("new"),
            "{verb}: {listing}"
        );
    }
    let reply = client.command("STAT /").await.unwrap();
    assert_eq!(reply.code.0, 213);
    let text = reply.text();
    assert!(text.contains("old") && text.contains("new"), "{text}");
}

#[tokio::test]
async fn names_with_line_breaks_are_refused_and_never_listed_raw() {
    let (server, root) = fs_server().await;
    let mut client = server.login("alice").await;
    let forged = "x\r\n-rw-r--r-- 1 ftp ftp 1 Jan  1  1970 fake";
    for line in [
        format!("STOR {forged}"),
        format!("APPE {forged}"),
        format!("MKD {forged}"),
        "MKD a\rb".to_owned(),
    ] {
        // A bare CR inside the line reaches the server (only CRLF or LF end a line); the
        // client library would refuse to send it, hence raw bytes.
        let line = line.replace("\r\n", "\r");
        client
            .send_raw(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(client.read_reply().await.unwrap().code.0, 553, "{line:?}");
    }
    client
        .store("/plain", DataMode::ExtendedPassive, b"x")
        .await
        .unwrap();
    assert_eq!(code(&mut client, "RNFR /plain").await, 350);
    client.send_raw(b"RNTO a\rb\r\n").await.unwrap();
    assert_eq!(client.read_reply().await.unwrap().code.0, 553);
    // Names put on disk by other means are left out of every listing.
    std::fs::write(root.join("y\nfake"), b"x").unwrap();
    for verb in ["LIST", "NLST", "MLSD"] {
        let listing = client
            .list(verb, Some("/"), DataMode::ExtendedPassive)
            .await
            .unwrap();
        let listing = String::from_utf8(listing).unwrap();
        assert_eq!(listing.lines().count(), 1, "{verb}: {listing:?}");
        assert!(listing.contains("plain"), "{verb}: {listing:?}");
    }
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

mod defender {
    use std::sync::atomic::AtomicUsize;

    use ferroftp_server::{DefenderOptions, DefenderWeights, ProxyProtocolOptions};

    use super::*;

    /// [`TestUsers`], counting the attempts that reach it (each would be an argon2
    /// verification with the users file).
    #[derive(Debug, Default)]
    struct CountingUsers {
        attempts: AtomicUsize,
    }

    #[async_trait]
    impl Authenticator for CountingUsers {
        async fn authenticate(&self, attempt: &LoginAttempt) -> Result<User, AuthError> {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            if attempt.password.expose() == "never-verified" {
                // A verification stuck in a long queue.
                std::future::pending::<()>().await;
            }
            TestUsers.authenticate(attempt).await
        }
    }

    async fn defended_server(defender: DefenderOptions) -> (TestServer, Arc<CountingUsers>) {
        let users = Arc::new(CountingUsers::default());
        let options = ServerOptions {
            defender,
            ..test_options()
        };
        let server = Server::bind(options, Arc::new(MemoryStorage::new()), users.clone())
            .await
            .unwrap();
        let address = server.local_addrs()[0];
        let task = tokio::spawn(server.run(std::future::pending()));
        let server = TestServer {
            address,
            _root: None,
            task,
        };
        (server, users)
    }

    /// A TCP connection to `address` from the loopback address `source`.
    async fn connect_from(address: SocketAddr, source: &str) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(address).await.unwrap()
    }

    /// What the server sent before it closed the connection (it must close within the
    /// bound: a reset counts as closed).
    async fn bytes_until_closed(mut stream: tokio::net::TcpStream) -> Vec<u8> {
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
            .await
            .expect("the server did not close the connection");
        if let Err(error) = read {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
        }
        received
    }

    async fn client_from(address: SocketAddr, source: &str) -> Client {
        let stream = connect_from(address, source).await;
        let mut client = Client::from_stream(stream, ClientOptions::default()).unwrap();
        assert_eq!(client.read_reply().await.unwrap().code.0, 220);
        client
    }

    /// USER alice, PASS wrong: the PASS reply's code.
    async fn wrong_password(client: &mut Client) -> u16 {
        assert_eq!(code(client, "USER alice").await, 331);
        code(client, "PASS wrong").await
    }

    #[tokio::test]
    async fn wrong_passwords_over_several_connections_ban_the_address_and_no_other() {
        let (server, users) = defended_server(DefenderOptions::default()).await;
        // Three per connection (server.max_failed_logins), five in all (weight 3 of 15).
        let mut first = client_from(server.address, "127.0.0.1").await;
        assert_eq!(wrong_password(&mut first).await, 530);
        assert_eq!(wrong_password(&mut first).await, 530);
        // A session opened before the ban, logging in after it.
        let mut waiting = client_from(server.address, "127.0.0.1").await;
        assert_eq!(code(&mut waiting, "USER alice").await, 331);
        let mut second = client_from(server.address, "127.0.0.1").await;
        assert_eq!(wrong_password(&mut second).await, 530);
        assert_eq!(wrong_password(&mut second).await, 530);
        assert_eq!(users.attempts.load(Ordering::Relaxed), 4);
        // The fifth failure bans: 421 and the connection closes.
        let reply = {
            assert_eq!(code(&mut second, "USER alice").await, 331);
            second.command("PASS wrong").await.unwrap()
        };
        assert_eq!(reply.code.0, 421);
        assert_eq!(
            reply.lines,
            ["Too many failures from your address, closing connection"]
        );
        // New connections are closed before any greeting.
        assert_eq!(
            bytes_until_closed(connect_from(server.address, "127.0.0.1").await).await,
            b""
        );
        // The open session's login is refused without asking the authenticator, even with
        // the right password.
        let reply = waiting.command("PASS secret").await.unwrap();
        assert_eq!(reply.code.0, 421);
        assert_eq!(users.attempts.load(Ordering::Relaxed), 5);
        // Another address is not affected.
        let mut other = client_from(server.address, "127.0.0.2").await;
        assert_eq!(other.login("alice", "secret").await.unwrap().code.0, 230);
    }

    #[tokio::test]
    async fn a_login_waiting_for_verification_is_answered_when_its_address_is_banned() {
        let (server, users) = defended_server(DefenderOptions {
            threshold: 6,
            ..DefenderOptions::default()
        })
        .await;
        let mut waiting = client_from(server.address, "127.0.0.11").await;
        assert_eq!(code(&mut waiting, "USER alice").await, 331);
        let waiting = tokio::spawn(async move { waiting.command("PASS never-verified").await });
        for _ in 0..200 {
            if users.attempts.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(users.attempts.load(Ordering::Relaxed), 1);
        let mut guessing = client_from(server.address, "127.0.0.11").await;
        assert_eq!(wrong_password(&mut guessing).await, 530);
        assert_eq!(wrong_password(&mut guessing).await, 421);
        let reply = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("the waiting login was not answered")
            .unwrap()
            .unwrap();
        assert_eq!(reply.code.0, 421);
    }

    #[tokio::test]
    async fn a_ban_ends_after_ban_time() {
        let (server, _) = defended_server(DefenderOptions {
            threshold: 3,
            ban_time: Duration::from_secs(1),
            ..DefenderOptions::default()
        })
        .await;
        let mut client = client_from(server.address, "127.0.0.3").await;
        assert_eq!(wrong_password(&mut client).await, 421);
        assert_eq!(
            bytes_until_closed(connect_from(server.address, "127.0.0.3").await).await,
            b""
        );
        // Readiness, not a timing assertion: the greeting comes back within the bound.
        let mut greeted = false;
        for _ in 0..100 {
            let mut stream = connect_from(server.address, "127.0.0.3").await;
            let mut first = [0u8; 3];
            if stream.read_exact(&mut first).await.is_ok() {
                assert_eq!(&first, b"220");
                greeted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(greeted, "still banned after 10 s");
    }

    #[tokio::test]
    async fn an_allowed_network_is_never_banned() {
        let (server, _) = defended_server(DefenderOptions {
            threshold: 3,
            allow: vec!["127.0.0.4/32".parse().unwrap()],
            ..DefenderOptions::default()
        })
        .await;
        for _ in 0..4 {
            let mut client = client_from(server.address, "127.0.0.4").await;
            assert_eq!(wrong_password(&mut client).await, 530);
            assert_eq!(wrong_password(&mut client).await, 530);
        }
        let mut client = client_from(server.address, "127.0.0.4").await;
        assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
    }

    #[tokio::test]
    async fn bans_survive_a_reload_and_new_weights_apply_at_once() {
        let options = ServerOptions {
            defender: DefenderOptions {
                threshold: 6,
                ..DefenderOptions::default()
            },
            ..test_options()
        };
        let server = drainable_server(options.clone()).await;
        let mut client = client_from(server.address, "127.0.0.5").await;
        assert_eq!(wrong_password(&mut client).await, 530);
        assert_eq!(wrong_password(&mut client).await, 421);

        let mut lenient = options;
        lenient.defender.weights = DefenderWeights {
            failed_login: 1,
            ..DefenderWeights::default()
        };
        server
            .handle
            .reload(lenient, Arc::new(TestUsers))
            .await
            .unwrap();
        assert_eq!(
            bytes_until_closed(connect_from(server.address, "127.0.0.5").await).await,
            b""
        );
        assert_eq!(server.handle.defender().bans().len(), 1);
        // Two failures no longer ban (2 of 6).
        let mut client = client_from(server.address, "127.0.0.6").await;
        assert_eq!(wrong_password(&mut client).await, 530);
        assert_eq!(wrong_password(&mut client).await, 530);
        client_from(server.address, "127.0.0.6").await;
    }

    #[tokio::test]
    async fn behind_a_trusted_proxy_the_client_named_by_the_header_is_banned() {
        let options = ServerOptions {
            proxy_protocol: ProxyProtocolOptions {
                trusted: vec!["127.0.0.0/8".parse().unwrap()],
                header_timeout: Duration::from_secs(5),
            },
            defender: DefenderOptions {
                threshold: 3,
                ..DefenderOptions::default()
            },
            ..test_options()
        };
        let server = start(options, Arc::new(MemoryStorage::new()), None).await;
        let address = server.address;
        let through_proxy = |client: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let header = format!("PROXY TCP4 {client} 127.0.0.1 40000 {}\r\n", address.port());
            stream.write_all(header.as_bytes()).await.unwrap();
            stream
        };
        let stream = through_proxy("198.51.100.7").await;
        let mut client = Client::from_stream(stream, ClientOptions::default()).unwrap();
        assert_eq!(client.read_reply().await.unwrap().code.0, 220);
        assert_eq!(wrong_password(&mut client).await, 421);
        // The proxy itself is not banned: only connections naming that client are closed.
        assert_eq!(
            bytes_until_closed(through_proxy("198.51.100.7").await).await,
            b""
        );
        let stream = through_proxy("198.51.100.8").await;
        let mut client = Client::from_stream(stream, ClientOptions::default()).unwrap();
        assert_eq!(client.read_reply().await.unwrap().code.0, 220);
    }

    #[tokio::test]
    async fn passive_listeners_opened_and_abandoned_again_and_again_count_as_a_flood() {
        let (server, _) = defended_server(DefenderOptions {
            threshold: 5,
            ..DefenderOptions::default()
        })
        .await;
        let mut client = client_from(server.address, "127.0.0.8").await;
        assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
        // The first EPSV's listener and nine replacements: nine abandoned, no flood yet.
        for _ in 0..10 {
            assert_eq!(code(&mut client, "EPSV").await, 229);
        }
        client_from(server.address, "127.0.0.8").await;
        // The tenth abandoned listener scores one passive flood (5).
        assert_eq!(code(&mut client, "EPSV").await, 229);
        assert_eq!(
            bytes_until_closed(connect_from(server.address, "127.0.0.8").await).await,
            b""
        );
    }

    #[tokio::test]
    async fn lines_over_the_cap_and_bounce_attempts_count_too() {
        let (server, _) = defended_server(DefenderOptions {
            threshold: 7,
            ..DefenderOptions::default()
        })
        .await;
        let mut client = client_from(server.address, "127.0.0.7").await;
        assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
        // A bounce attempt (5) and a line over the cap (2) reach the threshold.
        assert_eq!(code(&mut client, "PORT 192,0,2,1,200,10").await, 504);
        let long = format!("NOOP {}", "x".repeat(10_000));
        assert_eq!(code(&mut client, &long).await, 500);
        // The open session goes on; new connections are refused.
        assert_eq!(code(&mut client, "NOOP").await, 200);
        assert_eq!(
            bytes_until_closed(connect_from(server.address, "127.0.0.7").await).await,
            b""
        );
    }
}

// ---- per-user limits and quotas (docs/security.md, "Limits and quotas") ----

/// STOR that sends `data` whatever the server does, then returns the final reply (or the
/// refusal that came instead of 150).
async fn store_reply(client: &mut Client, path: &str, data: &[u8]) -> Reply {
    let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
    match client
        .transfer_command(&format!("STOR {path}"), prepared)
        .await
    {
        Ok((_preliminary, mut stream)) => {
            // The server may cut the data connection once the quota is passed.
            if stream.send(data).await.is_ok() {
                let _ = stream.close().await;
            }
            client.finish().await.unwrap()
        }
        Err(ClientError::UnexpectedReply(reply)) => reply,
        Err(error) => panic!("STOR {path}: {error}"),
    }
}

#[tokio::test]
async fn quota_refuses_with_552_publishes_nothing_and_keeps_the_previous_version() {
    let (server, root) = fs_server().await;
    let home = root.join("home/quota");
    let mut client = server.login("quota").await;
    let first = pattern(600);
    assert_eq!(store_reply(&mut client, "a", &first).await.code.0, 226);

    // 600 + 600 > 1000: refused while receiving, "b" never appears.
    let reply = store_reply(&mut client, "b", &pattern(600)).await;
    assert_eq!(
        (reply.code.0, reply.text()),
        (552, "Transfer failed: Quota exceeded".to_owned())
    );
    assert!(!home.join("b").exists());
    let names = client
        .list("NLST", None, DataMode::ExtendedPassive)
        .await
        .unwrap();
    assert_eq!(names, b"a\r\n");

    // Replacing "a" frees its 600 bytes first: 900 fit.
    let second = pattern(900);
    assert_eq!(store_reply(&mut client, "a", &second).await.code.0, 226);
    // 1200 bytes do not: the 900-byte version stays, byte for byte.
    let reply = store_reply(&mut client, "a", &pattern(1200)).await;
    assert_eq!(reply.code.0, 552);
    assert_eq!(
        sha256(&std::fs::read(home.join("a")).unwrap()),
        sha256(&second)
    );

    // ALLO announces the size: refused before any data connection is used.
    assert_eq!(code(&mut client, "ALLO 200").await, 200);
    let reply = store_reply(&mut client, "c", b"").await;
    assert_eq!(
        (reply.code.0, reply.text()),
        (552, "Quota exceeded".to_owned())
    );
    assert!(!home.join("c").exists());
    assert_eq!(code(&mut client, "ALLO 100").await, 200);
    assert_eq!(
        store_reply(&mut client, "c", &pattern(100)).await.code.0,
        226
    );

    let quota = client.command("SITE QUOTA").await.unwrap();
    assert_eq!(quota.code.0, 200);
    assert!(
        quota.text().contains("Bytes: 1000 of 1000"),
        "{}",
        quota.text()
    );
    assert!(quota.text().contains("Files: 2 of 3"), "{}", quota.text());
    // Deletes and renames keep the usage up to date, without a recount.
    assert_eq!(code(&mut client, "DELE a").await, 250);
    assert_eq!(code(&mut client, "RNFR c").await, 350);
    assert_eq!(code(&mut client, "RNTO d").await, 250);
    let quota = client.command("SITE QUOTA").await.unwrap();
    assert!(
        quota.text().contains("Bytes: 100 of 1000"),
        "{}",
        quota.text()
    );
    assert!(quota.text().contains("Files: 1 of 3"), "{}", quota.text());
    let status = client.command("STAT").await.unwrap();
    assert!(
        status.text().contains("quota 1kB, 3 files"),
        "{}",
        status.text()
    );
}

async fn refused_login(client: &mut Client, user: &str) -> Reply {
    match client.login(user, "secret").await {
        Err(ClientError::UnexpectedReply(reply)) => reply,
        other => panic!("login as {user}: {other:?}"),
    }
}

#[tokio::test]
async fn max_sessions_per_user_refuses_the_next_login_with_530_until_one_ends() {
    let server = memory_server().await;
    let mut first = server.login("capped").await;
    let mut second = server.connect().await;
    let reply = refused_login(&mut second, "capped").await;
    assert_eq!(reply.code.0, 530);
    assert!(reply.text().contains("max_sessions"), "{}", reply.text());
    // Other accounts are not limited by it.
    let _alice = server.login("alice").await;
    // REIN logs out and frees the slot at once.
    assert_eq!(code(&mut first, "REIN").await, 220);
    let mut third = server.connect().await;
    assert_eq!(third.login("capped", "secret").await.unwrap().code.0, 230);
    assert_eq!(refused_login(&mut first, "capped").await.code.0, 530);
    assert_eq!(third.quit().await.unwrap().code.0, 221);
    drop(third);
    // The session's end is seen once its connection is closed on the server.
    let mut logged_in = false;
    for _ in 0..100 {
        if second.login("capped", "secret").await.is_ok() {
            logged_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged_in);
    assert_eq!(refused_login(&mut first, "capped").await.code.0, 530);
}

#[tokio::test]
async fn allow_from_refuses_a_login_from_another_network_with_530() {
    let server = memory_server().await;
    let mut client = server.connect().await;
    let reply = refused_login(&mut client, "remote").await;
    assert_eq!(
        (reply.code.0, reply.text()),
        (530, "Login as remote not allowed from 127.0.0.1".to_owned())
    );
    assert_eq!(code(&mut client, "PWD").await, 530);
}

#[tokio::test]
async fn download_and_upload_rates_slow_transfers_down_and_keep_every_byte() {
    let (server, _root) = fs_server().await;
    let data = pattern(250_000);
    let mut alice = server.login("alice").await;
    alice
        .store("/big", DataMode::ExtendedPassive, &data)
        .await
        .unwrap();
    let mut slow = server.login("slow").await;
    // 100 kB/s with a burst of one second: at least 1.5 s for 250 kB. Only the lower
    // bound is asserted; a loaded machine can only make it slower.
    let started = std::time::Instant::now();
    let received = slow
        .retrieve("/big", DataMode::ExtendedPassive)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sha256(&received), sha256(&data));
    let started = std::time::Instant::now();
    slow.store("/big2", DataMode::Active, &data).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        sha256(&alice.retrieve("/big2", DataMode::Passive).await.unwrap()),
        sha256(&data)
    );
}

#[tokio::test]
async fn reload_applies_the_default_session_cap_per_user() {
    let options = test_options();
    let server = drainable_server(options.clone()).await;
    let _first = login_to(server.address, "alice").await;
    let mut capped = options.clone();
    capped.limits.max_sessions_per_user = Some(1);
    let report = server
        .handle
        .reload(capped, Arc::new(TestUsers))
        .await
        .unwrap();
    assert!(report.needs_restart.is_empty(), "{report:?}");
    let mut second = connect_to(server.address).await;
    assert_eq!(refused_login(&mut second, "alice").await.code.0, 530);
    // Each account has its own count.
    let _bob = login_to(server.address, "bob").await;
    server
        .handle
        .reload(options, Arc::new(TestUsers))
        .await
        .unwrap();
    assert_eq!(second.login("alice", "secret").await.unwrap().code.0, 230);
}
