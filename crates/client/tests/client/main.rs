//! The client against a scripted fake server: each test starts a listener on 127.0.0.1:0 whose
//! task writes canned replies and asserts the exact commands it receives. The diagnosis
//! probes' tests are the `probe` module (one test binary per crate).

// Test code: a panic is the failure report, so unwrapping is the point (the helpers
// outside `#[test]` functions are not covered by clippy.toml's allow-unwrap-in-tests).
#![allow(clippy::unwrap_used)]

mod probe;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ferroftp_client::{Client, ClientError, ClientOptions, DataMode, ReplyCode};
use ferroftp_proto::host_port::{
    format_epsv_text, format_pasv_text, format_port_argument, parse_eprt_argument,
    parse_port_argument,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a test waits for the fake server's script to end.
const SCRIPT_LIMIT: Duration = Duration::from_secs(20);

/// The server side of one scripted control connection.
struct FakeControl {
    stream: BufReader<TcpStream>,
}

impl FakeControl {
    /// Writes `text` exactly as given.
    async fn send(&mut self, text: &str) {
        self.stream
            .get_mut()
            .write_all(text.as_bytes())
            .await
            .unwrap();
    }

    /// Writes one reply line and CRLF.
    async fn reply(&mut self, line: &str) {
        self.send(&format!("{line}\r\n")).await;
    }

    /// Reads one CRLF-terminated line and returns its raw bytes without the CRLF.
    async fn receive_raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.stream.read_until(b'\n', &mut line).await.unwrap();
        assert!(
            line.ends_with(b"\r\n"),
            "command not terminated by CRLF: {line:?}"
        );
        line.truncate(line.len() - 2);
        line
    }

    /// Reads one command line.
    async fn receive_line(&mut self) -> String {
        String::from_utf8(self.receive_raw_line().await).unwrap()
    }

    /// Reads one command line and asserts it is `expected`.
    async fn expect(&mut self, expected: &str) {
        assert_eq!(self.receive_line().await, expected);
    }

    /// Asserts the client sends nothing more and closes the connection.
    async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// Starts a fake server that accepts one control connection and runs `script` on it.
async fn fake_server<Script, Run>(script: Script) -> (SocketAddr, JoinHandle<()>)
where
    Script: FnOnce(FakeControl) -> Run + Send + 'static,
    Run: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let script = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        script(FakeControl {
            stream: BufReader::new(stream),
        })
        .await;
    });
    (address, script)
}

/// Waits for the script and re-raises its assertion failures.
async fn script_done(script: JoinHandle<()>) {
    tokio::time::timeout(SCRIPT_LIMIT, script)
        .await
        .expect("the fake server's script did not finish")
        .expect("the fake server's script failed");
}

/// Connects and checks the usual greeting.
async fn connect(address: SocketAddr) -> Client {
    let (client, greeting) = Client::connect(address).await.unwrap();
    assert_eq!(greeting.code, ReplyCode::SERVICE_READY);
    client
}

/// Bytes that catch any transformation: every byte value, CR, LF, CRLF, Telnet IAC, more than
/// one copy buffer's worth.
fn awkward_bytes(length: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = b"\r\n\n\r\xff\xf4\xff\xf2\x00".to_vec();
    bytes.extend((0..length).map(|index| (index * 7 + index / 256) as u8));
    bytes
}

/// A listener for one data connection on 127.0.0.1.
async fn data_listener() -> (TcpListener, SocketAddrV4) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let SocketAddr::V4(address) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    (listener, address)
}

#[tokio::test]
async fn login_sends_user_then_pass() {
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("USER alice").await;
        control.reply("331 Password required for alice").await;
        control.expect("PASS s3cret word").await;
        control.reply("230 Logged in").await;
        control.expect("QUIT").await;
        control.reply("221 Goodbye").await;
        control.expect_closed().await;
    })
    .await;
    let (mut client, greeting) = Client::connect(address).await.unwrap();
    assert_eq!(greeting.code, ReplyCode::SERVICE_READY);
    assert_eq!(greeting.lines, ["fake ready"]);
    let logged_in = client.login("alice", "s3cret word").await.unwrap();
    assert_eq!(logged_in.code, ReplyCode::LOGGED_IN);
    assert_eq!(client.quit().await.unwrap().code, ReplyCode::CLOSING);
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn login_stops_at_230_after_user_and_reports_refusals() {
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("USER anonymous").await;
        control.reply("230 Anonymous access granted").await;
        control.expect("USER mallory").await;
        control.reply("331 Password required").await;
        control.expect("PASS wrong").await;
        control.reply("530 Login incorrect").await;
        control.expect_closed().await;
    })
    .await;
    let mut client = connect(address).await;
    assert_eq!(
        client.login("anonymous", "unused").await.unwrap().code,
        ReplyCode::LOGGED_IN
    );
    let refused = client.login("mallory", "wrong").await.unwrap_err();
    let reply = refused.unexpected_reply().expect("an unexpected reply");
    assert_eq!(reply.code, ReplyCode::NOT_LOGGED_IN);
    assert_eq!(reply.text(), "Login incorrect");
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn multi_line_replies_are_read_whole_and_nothing_is_skipped() {
    let (address, script) = fake_server(|mut control| async move {
        // A 120 greeting is followed by a 220: both are replies of their own.
        control
            .send("120 Ready in 1 minute\r\n220-Welcome\r\n220 to fake\r\n")
            .await;
        control.expect("FEAT").await;
        control
            .send("211-Features:\r\n EPRT\r\n EPSV\r\n 211 not the end\r\n211 End\r\n")
            .await;
        control.expect("STAT").await;
        // vsftpd style: inner lines repeat the code with a hyphen.
        control
            .send("211-Status:\r\n211-Connected\r\n211 End of status\r\n")
            .await;
        control.expect("NOOP").await;
        // Two replies for one command: the second must wait for read_reply.
        control.send("200 first\r\n200 second\r\n").await;
        control.expect_closed().await;
    })
    .await;
    let (mut client, greeting) = Client::connect(address).await.unwrap();
    assert_eq!(greeting.code, ReplyCode(120));
    let welcome = client.read_reply().await.unwrap();
    assert_eq!(welcome.code, ReplyCode::SERVICE_READY);
    assert_eq!(welcome.lines, ["Welcome", "to fake"]);

    let features = client.command("FEAT").await.unwrap();
    assert_eq!(features.code, ReplyCode::SYSTEM_STATUS);
    assert_eq!(
        features.lines,
        ["Features:", "EPRT", "EPSV", "211 not the end", "End"]
    );

    let status = client.command("STAT").await.unwrap();
    assert_eq!(status.lines, ["Status:", "Connected", "End of status"]);

    assert_eq!(client.command("NOOP").await.unwrap().text(), "first");
    assert_eq!(client.read_reply().await.unwrap().text(), "second");
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn passive_retrieve_returns_exact_bytes() {
    let content = awkward_bytes(300_000);
    let expected = content.clone();
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("PASV").await;
        let (listener, data_address) = data_listener().await;
        control
            .reply(&format!("227 {}", format_pasv_text(data_address)))
            .await;
        control.expect("RETR /files/blob.bin").await;
        let (mut data, _) = listener.accept().await.unwrap();
        control
            .reply("150 Opening BINARY mode data connection")
            .await;
        data.write_all(&content).await.unwrap();
        drop(data);
        control.reply("226 Transfer complete").await;
        control.expect_closed().await;
    })
    .await;
    let mut client = connect(address).await;
    let received = client
        .retrieve("/files/blob.bin", DataMode::Passive)
        .await
        .unwrap();
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "the retrieved bytes differ");
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn passive_address_0_0_0_0_means_the_control_peer() {
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("PASV").await;
        let (listener, data_address) = data_listener().await;
        let unspecified = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, data_address.port());
        control
            .reply(&format!(
                "227 Entering Passive Mode ={}",
                format_port_argument(unspecified)
            ))
            .await;
        control.expect("NLST /dir").await;
        let (mut data, _) = listener.accept().await.unwrap();
        control.reply("150 Here comes the listing").await;
        data.write_all(b"a.txt\r\nb.txt\r\n").await.unwrap();
        drop(data);
        control.reply("226 Directory send OK").await;
        control.expect_closed().await;
    })
    .await;
    let mut client = connect(address).await;
    let listing = client
        .list("NLST", Some("/dir"), DataMode::Passive)
        .await
        .unwrap();
    assert_eq!(listing, b"a.txt\r\nb.txt\r\n");
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn extended_passive_store_sends_exact_bytes() {
    let content = awkward_bytes(200_000);
    let expected = content.clone();
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("EPSV").await;
        let (listener, data_address) = data_listener().await;
        control
            .reply(&format!("229 {}", format_epsv_text(data_address.port())))
            .await;
        control.expect("STOR upload.bin").await;
        let (mut data, _) = listener.accept().await.unwrap();
        control.reply("150 Ok to send data").await;
        let mut received = Vec::new();
        data.read_to_end(&mut received).await.unwrap();
        assert!(received == expected, "the stored bytes differ");
        control.reply("226 Transfer complete").await;
        control.expect_closed().await;
    })
    .await;
    let mut client = connect(address).await;
    let done = client
        .store("upload.bin", DataMode::ExtendedPassive, &content)
        .await
        .unwrap();
    assert_eq!(done.code, ReplyCode::CLOSING_DATA);
    assert_eq!(done.text(), "Transfer complete");
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn active_retrieve_with_port_and_eprt() {
    for mode in [DataMode::Active, DataMode::ExtendedActive] {
        let content = awkward_bytes(100_000);
        let expected = content.clone();
        let (address, script) = fake_server(move |mut control| async move {
            control.reply("220 fake ready").await;
            let line = control.receive_line().await;
            let target = match mode {
                DataMode::Active => {
                    let argument = line.strip_prefix("PORT ").expect("a PORT command");
                    SocketAddr::V4(parse_port_argument(argument).unwrap())
                }
                _ => {
                    let argument = line.strip_prefix("EPRT ").expect("an EPRT command");
                    assert!(argument.starts_with("|1|127.0.0.1|"), "{argument}");
                    parse_eprt_argument(argument).unwrap()
                }
            };
            assert_eq!(target.ip(), Ipv4Addr::LOCALHOST);
            control
                .reply(&format!("200 {} command successful", mode.verb()))
                .await;
            control.expect("RETR a.txt").await;
            let mut data = TcpStream::connect(target).await.unwrap();
            control.reply("150 Opening data connection").await;
            data.write_all(&content).await.unwrap();
            drop(data);
            control.reply("226 Transfer complete").await;
            control.expect_closed().await;
        })
        .await;
        let mut client = connect(address).await;
        let received = client.retrieve("a.txt", mode).await.unwrap();
        assert!(received == expected, "{mode:?}: the retrieved bytes differ");
        drop(client);
        script_done(script).await;
    }
}

#[tokio::test]
async fn active_data_on_a_listener_the_caller_bound() {
    for mode in [DataMode::Active, DataMode::ExtendedActive] {
        let (listener, bound) = data_listener().await;
        let (address, script) = fake_server(move |mut control| async move {
            control.reply("220 fake ready").await;
            let line = control.receive_line().await;
            let target = match mode {
                DataMode::Active => SocketAddr::V4(
                    parse_port_argument(line.strip_prefix("PORT ").expect("a PORT command"))
                        .unwrap(),
                ),
                _ => parse_eprt_argument(line.strip_prefix("EPRT ").expect("an EPRT command"))
                    .unwrap(),
            };
            assert_eq!(
                target,
                SocketAddr::V4(bound),
                "the caller's listener is announced"
            );
            control.reply("200 Command okay").await;
            control.expect("RETR a.txt").await;
            let mut data = TcpStream::connect(target).await.unwrap();
            control.reply("150 Opening data connection").await;
            data.write_all(b"hello").await.unwrap();
            drop(data);
            control.reply("226 Transfer complete").await;
            control.expect_closed().await;
        })
        .await;
        let mut client = connect(address).await;
        let prepared = client.open_active_data(mode, listener).await.unwrap();
        assert_eq!(prepared.mode(), mode);
        assert_eq!(prepared.address().unwrap(), SocketAddr::V4(bound));
        let (_preliminary, mut data) = client
            .transfer_command("RETR a.txt", prepared)
            .await
            .unwrap();
        let received = data.receive_all().await.unwrap();
        assert_eq!(received, b"hello");
        drop(data);
        assert_eq!(client.finish().await.unwrap().code, ReplyCode::CLOSING_DATA);
        drop(client);
        script_done(script).await;
    }
    let (listener, _) = data_listener().await;
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect_closed().await;
    })
    .await;
    let mut client = connect(address).await;
    let error = client
        .open_active_data(DataMode::ExtendedPassive, listener)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Protocol(_)), "{error:?}");
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn refused_transfer_is_an_unexpected_reply() {
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("EPSV").await;
        let (_listener, data_address) = data_listener().await;
        control
            .reply(&format!("229 {}", format_epsv_text(data_address.port())))
            .await;
        control.expect("RETR missing").await;
        control.reply("550 No such file").await;
        control.expect("NOOP").await;
        control.reply("200 Still here").await;
        control.expect_closed().await;
    })
    .await;
    let mut client = connect(address).await;
    let error = client
        .retrieve("missing", DataMode::ExtendedPassive)
        .await
        .unwrap_err();
    assert_eq!(
        error.unexpected_reply().map(|reply| reply.code),
        Some(ReplyCode::FILE_UNAVAILABLE)
    );
    assert_eq!(client.command("NOOP").await.unwrap().code, ReplyCode::OK);
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn low_level_transfer_allows_abort_mid_transfer() {
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("EPSV").await;
        let (listener, data_address) = data_listener().await;
        control
            .reply(&format!("229 {}", format_epsv_text(data_address.port())))
            .await;
        control.expect("REST 5").await;
        control.reply("350 Restarting at 5").await;
        control.expect("RETR big").await;
        let (mut data, _) = listener.accept().await.unwrap();
        control.reply("150 Opening data connection").await;
        data.write_all(b"first chunk").await.unwrap();
        control.expect("ABOR").await;
        drop(data);
        control
            .send("426 Transfer aborted\r\n226 Abort successful\r\n")
            .await;
        control.expect_closed().await;
    })
    .await;
    let mut client = connect(address).await;
    let prepared = client.open_data(DataMode::ExtendedPassive).await.unwrap();
    assert_eq!(prepared.mode(), DataMode::ExtendedPassive);
    assert_eq!(prepared.reply().code, ReplyCode::ENTERING_EXTENDED_PASSIVE);
    assert_eq!(
        client.command("REST 5").await.unwrap().code,
        ReplyCode::PENDING_FURTHER_INFO
    );
    let (preliminary, mut data) = client.transfer_command("RETR big", prepared).await.unwrap();
    assert_eq!(preliminary.code, ReplyCode::OPENING_DATA);
    let mut chunk = [0u8; 11];
    data.read_exact(&mut chunk).await.unwrap();
    assert_eq!(&chunk, b"first chunk");
    assert_eq!(
        client.command("ABOR").await.unwrap().code,
        ReplyCode::TRANSFER_ABORTED
    );
    assert_eq!(client.finish().await.unwrap().code, ReplyCode::CLOSING_DATA);
    drop(data);
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn raw_bytes_go_out_unchanged() {
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        assert_eq!(control.receive_raw_line().await, b"NO\xffOP");
        control.reply("500 Syntax error").await;
        control.expect_closed().await;
    })
    .await;
    let mut client = connect(address).await;
    client.send_raw(b"NO\xffOP\r\n").await.unwrap();
    assert_eq!(
        client.read_reply().await.unwrap().code,
        ReplyCode::SYNTAX_ERROR
    );
    let smuggled = client.command("NOOP\r\nDELE x").await.unwrap_err();
    assert!(matches!(smuggled, ClientError::Protocol(_)), "{smuggled:?}");
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn a_timed_out_read_loses_nothing() {
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("NOOP").await;
        control.send("200 par").await;
        control.expect("RESUME").await;
        control.send("tial\r\n").await;
        control.expect_closed().await;
    })
    .await;
    let options = ClientOptions {
        timeout: Duration::from_millis(300),
    };
    let (mut client, _greeting) = Client::connect_with_options(address, options)
        .await
        .unwrap();
    let error = client.command("NOOP").await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout), "{error:?}");
    // The script waits for a marker before finishing the reply.
    client.send_raw(b"RESUME\r\n").await.unwrap();
    client.set_timeout(Duration::from_secs(10));
    assert_eq!(client.read_reply().await.unwrap().text(), "partial");
    drop(client);
    script_done(script).await;
}

#[tokio::test]
async fn broken_reply_lines_are_protocol_errors() {
    for broken in [
        "200 bare line feed\n".to_owned(),
        format!("200 {}\r\n", "x".repeat(70 * 1024)),
        "hello\r\n".to_owned(),
    ] {
        let (address, script) = fake_server(move |mut control| async move {
            control.reply("220 fake ready").await;
            control.expect("NOOP").await;
            // The client may reset the connection before reading all of an overlong line.
            let _ = control.stream.get_mut().write_all(broken.as_bytes()).await;
            let _ = control.stream.read_to_end(&mut Vec::new()).await;
        })
        .await;
        let mut client = connect(address).await;
        let error = client.command("NOOP").await.unwrap_err();
        assert!(matches!(error, ClientError::Protocol(_)), "{error:?}");
        drop(client);
        script_done(script).await;
    }
}

#[tokio::test]
async fn server_closing_the_control_connection_is_unexpected_eof() {
    let (address, script) = fake_server(|mut control| async move {
        control.reply("220 fake ready").await;
        control.expect("QUIT").await;
        control.reply("221 Bye").await;
    })
    .await;
    let mut client = connect(address).await;
    assert_eq!(client.quit().await.unwrap().code, ReplyCode::CLOSING);
    script_done(script).await;
    match client.read_reply().await.unwrap_err() {
        ClientError::Io(error) => assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected end of file, got {other:?}"),
    }
}
