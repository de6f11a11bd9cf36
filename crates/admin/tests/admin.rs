//! Admin listener integration tests: an in-process server and its admin listener on port 0,
//! real FTP transfers through our client, HTTP requests over loopback. One test binary for
//! the crate. The metrics recorder is process-wide, so only one test moves data and asserts
//! byte counters.

// Test code: a panic is the failure report, so unwrapping is the point (the helpers
// outside `#[test]` functions are not covered by clippy.toml's allow-unwrap-in-tests).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use std::time::SystemTime;

use async_trait::async_trait;
use ferroftp_admin::{AdminOptions, AdminServer};
use ferroftp_backend::testing::MemoryStorage;
use ferroftp_backend::{
    AuthError, Authenticator, Capabilities, Download, EntryStream, FileMeta, LoginAttempt, Storage,
    StorageError, StorageErrorKind, Upload, UploadTarget, User, VirtualPath, WriteMode,
};
use ferroftp_client::{Client, ClientOptions, DataMode};
use ferroftp_server::{DefenderEvent, Server, ServerOptions, ServerStatus, TransferDirection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Taken by the tests that assert counters their FTP traffic moves (logins, commands,
/// replies), so that no other test's traffic lands between their two scrapes.
static FTP_TRAFFIC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug)]
struct TestUsers;

#[async_trait]
impl Authenticator for TestUsers {
    async fn authenticate(&self, attempt: &LoginAttempt) -> Result<User, AuthError> {
        if attempt.username != "alice" || attempt.password.expose() != "secret" {
            return Err(AuthError::Rejected);
        }
        Ok(User {
            name: attempt.username.clone(),
            home: VirtualPath::root(),
            read_only: false,
            policy: Default::default(),
        })
    }
}

/// A memory storage whose metadata calls fail while `failing` is set: a disk that went away,
/// as `/readyz` sees it.
#[derive(Debug, Default)]
struct FlakyStorage {
    inner: MemoryStorage,
    failing: AtomicBool,
}

#[async_trait]
impl Storage for FlakyStorage {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn metadata(&self, path: &VirtualPath) -> Result<FileMeta, StorageError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(StorageError::new(StorageErrorKind::Local, "I/O error"));
        }
        self.inner.metadata(path).await
    }
    async fn list(&self, path: &VirtualPath) -> Result<EntryStream, StorageError> {
        self.inner.list(path).await
    }
    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError> {
        self.inner.read(path, offset).await
    }
    async fn resumable_size(&self, path: &VirtualPath) -> Result<u64, StorageError> {
        self.inner.resumable_size(path).await
    }
    async fn start_upload(
        &self,
        target: &UploadTarget,
        mode: WriteMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        self.inner.start_upload(target, mode).await
    }
    async fn make_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        self.inner.make_dir(path).await
    }
    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        self.inner.remove_dir(path).await
    }
    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError> {
        self.inner.remove_file(path).await
    }
    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError> {
        self.inner.rename(from, to).await
    }
    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> Result<(), StorageError> {
        self.inner.set_modified(path, time).await
    }
}

struct Running {
    ftp: SocketAddr,
    admin: SocketAddr,
    status: Arc<ServerStatus>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A server and its admin listener; `passive_first` picks a passive range of its own per test.
async fn start(passive_first: u16) -> Running {
    start_with(
        passive_first,
        Arc::new(MemoryStorage::new()),
        Duration::from_secs(10),
    )
    .await
}

async fn start_with(
    passive_first: u16,
    storage: Arc<dyn Storage>,
    accept_timeout: Duration,
) -> Running {
    let mut options = ServerOptions {
        passive_ports: passive_first..=passive_first + 9,
        failed_login_delay: Duration::ZERO,
        ..ServerOptions::default()
    };
    options.data.accept_timeout = accept_timeout;
    let server = Server::bind(options, storage, Arc::new(TestUsers))
        .await
        .unwrap();
    let ftp = server.local_addrs()[0];
    let status = server.status();
    let admin = AdminServer::bind(
        &AdminOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            per_user_metrics: true,
        },
        server.status(),
    )
    .await
    .unwrap();
    let admin_address = admin.local_addr().unwrap();
    let tasks = vec![
        tokio::spawn(server.run(std::future::pending())),
        tokio::spawn(admin.run()),
    ];
    // `run` marks the listeners as accepting when it starts them.
    for _ in 0..200 {
        if status.is_accepting() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        ftp,
        admin: admin_address,
        status,
        tasks,
    }
}

/// One HTTP/1.1 GET with `Connection: close`: the status code and the body.
async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    request(address, "GET", path).await
}

async fn request(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

async fn login(address: SocketAddr) -> Client {
    let options = ClientOptions {
        timeout: Duration::from_secs(20),
    };
    let (mut client, _) = Client::connect_with_options(address, options)
        .await
        .unwrap();
    assert_eq!(client.login("alice", "secret").await.unwrap().code.0, 230);
    client
}

/// The value of the series `name{labels}` exactly as rendered, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn metrics_count_the_bytes_moved_and_status_shows_the_running_upload() {
    let _alone = FTP_TRAFFIC.lock().await;
    let server = start(12100).await;
    // Counters are process-wide: what this test did is the difference to this scrape.
    let (_, baseline) = get(server.admin, "/metrics").await;
    let counted = |metrics: &str, series: &str| sample(metrics, series) - sample(&baseline, series);
    let mut client = login(server.ftp).await;
    let upload: Vec<u8> = (0..300_000u32).map(|index| (index % 251) as u8).collect();

    // An upload held open half-way: the status shows it with the bytes received so far.
    let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
    let (_, mut stream) = client
        .transfer_command("STOR up.bin", prepared)
        .await
        .unwrap();
    stream.send(&upload[..100_000]).await.unwrap();
    let mut seen = None;
    for _ in 0..500 {
        let snapshot = server.status.snapshot();
        let transfer = snapshot.sessions[0].transfer.clone().unwrap();
        if transfer.bytes == 100_000 {
            seen = Some((snapshot.sessions[0].user.clone(), transfer));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (user, transfer) = seen.expect("the status never showed 100000 bytes received");
    assert_eq!(user.as_deref(), Some("alice"));
    assert_eq!(transfer.direction, TransferDirection::Upload);
    assert_eq!(transfer.path, "/up.bin");
    let (code, page) = get(server.admin, "/status").await;
    assert_eq!(code, 200);
    assert!(page.contains("<td class=\"user\">alice</td>"), "{page}");
    assert!(
        page.contains("upload <span class=\"path\">/up.bin</span>"),
        "{page}"
    );
    assert!(page.contains("data-bytes=\"100000\""), "{page}");

    stream.send(&upload[100_000..]).await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(client.finish().await.unwrap().code.0, 226);
    assert!(server.status.snapshot().sessions[0].transfer.is_none());

    let downloaded = client
        .retrieve("up.bin", DataMode::ExtendedPassive)
        .await
        .unwrap();
    assert_eq!(downloaded, upload);
    assert_eq!(client.command("NOPE").await.unwrap().code.0, 500);

    let (code, metrics) = get(server.admin, "/metrics").await;
    assert_eq!(code, 200);
    let bytes = |direction: &str| {
        counted(
            &metrics,
            &format!("ferroftp_transfer_bytes_total{{direction=\"{direction}\",result=\"ok\"}}"),
        )
    };
    assert_eq!(bytes("upload"), 300_000.0, "{metrics}");
    assert_eq!(bytes("download"), 300_000.0, "{metrics}");
    assert_eq!(
        counted(
            &metrics,
            "ferroftp_transfers_total{direction=\"upload\",result=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        counted(
            &metrics,
            "ferroftp_user_transfer_bytes_total{user=\"alice\",direction=\"download\",result=\"ok\"}"
        ),
        300_000.0,
        "{metrics}"
    );
    assert_eq!(
        counted(&metrics, "ferroftp_logins_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        counted(&metrics, "ferroftp_commands_total{verb=\"STOR\"}"),
        1.0
    );
    assert_eq!(
        counted(&metrics, "ferroftp_commands_total{verb=\"other\"}"),
        1.0
    );
    assert_eq!(
        counted(&metrics, "ferroftp_replies_total{class=\"5xx\"}"),
        1.0
    );
    let listener = format!("ferroftp_sessions_open{{listener=\"{}\"}}", server.ftp);
    assert_eq!(sample(&metrics, &listener), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "ferroftp_passive_ports_capacity"), 10.0);
    assert!(metrics.contains("# TYPE ferroftp_transfer_duration_seconds histogram"));
    assert!(metrics.contains("# HELP ferroftp_transfer_bytes_total "));
    assert!(
        metrics.contains("ferroftp_upload_commit_duration_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn health_readiness_and_draining() {
    let server = start(12120).await;
    assert_eq!(
        get(server.admin, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        get(server.admin, "/readyz").await,
        (200, "ready\n".to_owned())
    );
    server.status.set_draining();
    assert_eq!(
        get(server.admin, "/readyz").await,
        (503, "draining\n".to_owned())
    );
    // Alive all the same.
    assert_eq!(get(server.admin, "/healthz").await.0, 200);
}

#[tokio::test]
async fn readiness_fails_while_the_storage_does_not_answer() {
    let storage = Arc::new(FlakyStorage::default());
    let server = start_with(
        12160,
        Arc::clone(&storage) as Arc<dyn Storage>,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(get(server.admin, "/readyz").await.0, 200);
    storage.failing.store(true, Ordering::Relaxed);
    // The kind only: details may name server paths.
    assert_eq!(
        get(server.admin, "/readyz").await,
        (503, "storage: Local\n".to_owned())
    );
    assert_eq!(get(server.admin, "/healthz").await.0, 200);
    storage.failing.store(false, Ordering::Relaxed);
    assert_eq!(get(server.admin, "/readyz").await.0, 200);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let server = start(12140).await;
    assert_eq!(get(server.admin, "/nope").await.0, 404);
    assert_eq!(request(server.admin, "POST", "/metrics").await.0, 405);
    let (code, page) = get(server.admin, "/").await;
    assert_eq!(code, 200);
    assert!(page.contains("No session is open."), "{page}");
}

#[tokio::test]
async fn refused_data_connections_are_counted_by_cause() {
    let _alone = FTP_TRAFFIC.lock().await;
    let server = start_with(
        12180,
        Arc::new(MemoryStorage::new()),
        Duration::from_millis(500),
    )
    .await;
    let mut client = login(server.ftp).await;
    // RFC 2577 bounce attempts: a third party, a privileged port.
    assert_eq!(
        client
            .command("PORT 192,0,2,1,200,10")
            .await
            .unwrap()
            .code
            .0,
        504
    );
    assert_eq!(
        client
            .command("EPRT |1|127.0.0.1|25|")
            .await
            .unwrap()
            .code
            .0,
        504
    );
    // A connection to the passive port from another loopback address is dropped; the
    // client's own never comes, so the accept times out: 425.
    let reply = client.command("EPSV").await.unwrap();
    assert_eq!(reply.code.0, 229);
    let text = reply.lines.join("\n");
    let port: u16 = text
        .split("|||")
        .nth(1)
        .and_then(|rest| rest.split('|').next())
        .unwrap()
        .parse()
        .unwrap();
    let foreign = tokio::net::TcpSocket::new_v4().unwrap();
    foreign.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let _foreign = foreign
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    assert_eq!(client.command("LIST").await.unwrap().code.0, 425);

    let (_, metrics) = get(server.admin, "/metrics").await;
    let refused = |cause: &str| {
        sample(
            &metrics,
            &format!("ferroftp_data_connections_refused_total{{cause=\"{cause}\"}}"),
        )
    };
    assert_eq!(refused("bounce"), 2.0, "{metrics}");
    assert_eq!(refused("foreign_peer"), 1.0, "{metrics}");
    assert_eq!(refused("timeout"), 1.0, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "ferroftp_transfers_total{direction=\"listing\",result=\"failed\"}"
        ),
        1.0
    );
}

/// The only test that bans: the defender's counters are exact. The events are recorded
/// through the defender itself: FTP replies here would change the reply counters another
/// test asserts.
#[tokio::test]
async fn bans_are_listed_counted_and_lifted() {
    let server = start(12190).await;
    assert_eq!(get(server.admin, "/bans").await, (200, "[]\n".to_owned()));
    let defender = server.status.defender().unwrap();
    let client = "127.0.0.1".parse().unwrap();
    for _ in 0..5 {
        defender.record(client, DefenderEvent::FailedLogin);
    }
    // The next connection is closed before any greeting.
    assert!(Client::connect(server.ftp).await.is_err());

    let (code, bans) = get(server.admin, "/bans").await;
    assert_eq!(code, 200);
    assert!(
        bans.starts_with("[\n  {\"address\": \"127.0.0.1\", \"until\": \"")
            && bans.ends_with("\"bans\": 1}\n]\n"),
        "{bans}"
    );
    let (_, metrics) = get(server.admin, "/metrics").await;
    assert_eq!(
        sample(&metrics, "ferroftp_defender_bans_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "ferroftp_defender_refused_connections_total"),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "ferroftp_defender_events_total{event=\"failed_login\"}"
        ),
        5.0
    );
    assert_eq!(
        sample(
            &metrics,
            "ferroftp_defender_events_total{event=\"unknown_user\"}"
        ),
        0.0
    );
    assert!(metrics.contains("ferroftp_defender_events_total{event=\"unknown_user\"} 0"));
    assert_eq!(sample(&metrics, "ferroftp_defender_banned_addresses"), 1.0);

    assert_eq!(
        request(server.admin, "DELETE", "/bans/nonsense").await.0,
        400
    );
    assert_eq!(
        request(server.admin, "DELETE", "/bans/192.0.2.1").await.0,
        404
    );
    assert_eq!(
        request(server.admin, "DELETE", "/bans/127.0.0.1").await.0,
        200
    );
    assert_eq!(get(server.admin, "/bans").await.1, "[]\n");
    let (_client, greeting) = Client::connect(server.ftp).await.unwrap();
    assert_eq!(greeting.code.0, 220);
}
