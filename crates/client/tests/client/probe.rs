//! The diagnosis probes against scripted fake servers on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use ferroftp_client::{Client, ClientOptions, ConnectFailure, connect_timed};
use ferroftp_proto::host_port::{format_pasv_text, parse_port_argument};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

/// A control connection whose server side runs `script`; returns the client.
async fn scripted<Script, Run>(script: Script) -> (Client, tokio::task::JoinHandle<()>)
where
    Script: FnOnce(BufReader<TcpStream>) -> Run + Send + 'static,
    Run: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::timeout(LIMIT, script(BufReader::new(stream)))
            .await
            .expect("script finished in time");
    });
    let stream = TcpStream::connect(address).await.unwrap();
    let options = ClientOptions {
        timeout: Duration::from_secs(2),
    };
    (Client::from_stream(stream, options).unwrap(), server)
}

async fn line(control: &mut BufReader<TcpStream>) -> String {
    let mut text = String::new();
    control.read_line(&mut text).await.unwrap();
    text.trim_end().to_owned()
}

async fn reply(control: &mut BufReader<TcpStream>, text: &str) {
    control
        .get_mut()
        .write_all(format!("{text}\r\n").as_bytes())
        .await
        .unwrap();
}

#[tokio::test]
async fn connect_timed_tells_refused_from_connected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let attempt = connect_timed(open, LIMIT).await;
    assert!(attempt.is_connected(), "{attempt}");
    assert!(
        attempt
            .to_string()
            .starts_with(&format!("connect to {open}: connected in "))
    );

    drop(listener);
    let attempt = connect_timed(open, LIMIT).await;
    assert!(
        matches!(attempt.failure(), Some(ConnectFailure::Refused)),
        "{attempt}"
    );
    assert!(
        attempt.to_string().contains("refused (reset) after"),
        "{attempt}"
    );
}

#[tokio::test]
async fn passive_probe_records_every_step() {
    let data = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let SocketAddr::V4(data_address) = data.local_addr().unwrap() else {
        unreachable!()
    };
    let (mut client, server) = scripted(move |mut control| async move {
        assert_eq!(line(&mut control).await, "PASV");
        reply(
            &mut control,
            &format!("227 {}", format_pasv_text(data_address)),
        )
        .await;
        let (mut stream, _) = data.accept().await.unwrap();
        assert_eq!(line(&mut control).await, "LIST");
        reply(&mut control, "150 Here it comes").await;
        stream.write_all(b"a\r\nb\r\n").await.unwrap();
        drop(stream);
        reply(&mut control, "226 Done").await;
    })
    .await;
    let (pasv, announced) = client.request_passive().await.unwrap();
    assert_eq!(pasv.code.0, 227);
    assert_eq!(announced, data_address);
    let attempt = connect_timed(SocketAddr::V4(announced), LIMIT).await;
    let probe = client
        .probe_transfer("LIST", attempt.result.unwrap(), None, LIMIT)
        .await;
    assert!(probe.succeeded(), "{probe:?}");
    assert_eq!(probe.bytes, 6);
    let codes: Vec<u16> = probe.replies.iter().map(|reply| reply.code.0).collect();
    assert_eq!(codes, [150, 226]);
    server.await.unwrap();
}

#[tokio::test]
async fn active_probe_reports_the_servers_refusal_and_its_425() {
    let (mut client, server) = scripted(|mut control| async move {
        let port = line(&mut control).await;
        assert!(port.starts_with("PORT 127,0,0,1,"), "{port}");
        parse_port_argument(&port["PORT ".len()..]).unwrap();
        reply(&mut control, "500 Illegal PORT command.").await;
        let port = line(&mut control).await;
        assert!(port.starts_with("PORT "), "{port}");
        reply(&mut control, "200 PORT command successful").await;
        assert_eq!(line(&mut control).await, "LIST");
        // Never connects; says so.
        reply(&mut control, "425 Failed to establish connection.").await;
    })
    .await;
    let refused = client.offer_active(false).await.unwrap();
    assert_eq!(refused.reply.code.0, 500);
    assert!(refused.command.starts_with("PORT 127,0,0,1,"));

    let offer = client.offer_active(false).await.unwrap();
    assert_eq!(offer.reply.code.0, 200);
    let probe = client
        .probe_active_transfer("LIST", offer.listener, None, LIMIT)
        .await;
    assert!(!probe.succeeded());
    assert!(probe.accepted.is_none());
    assert_eq!(probe.final_reply().map(|reply| reply.code.0), Some(425));
    server.await.unwrap();
}

#[tokio::test]
async fn active_probe_gives_up_when_nothing_happens() {
    let (mut client, server) = scripted(|mut control| async move {
        let _port = line(&mut control).await;
        reply(&mut control, "200 OK").await;
        assert_eq!(line(&mut control).await, "LIST");
        // Neither a connection nor a reply until the client goes away.
        let mut rest = String::new();
        let _ = control.read_line(&mut rest).await;
    })
    .await;
    let offer = client.offer_active(false).await.unwrap();
    let probe = client
        .probe_active_transfer("LIST", offer.listener, None, Duration::from_millis(300))
        .await;
    assert!(probe.replies.is_empty());
    let stalled = probe.stalled.clone().unwrap();
    assert!(
        stalled.starts_with("no connection from the server within 0.300 s"),
        "{stalled}"
    );
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn inspect_tls_tells_a_refused_auth_tls_apart_from_a_broken_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut control = BufReader::new(stream);
        control
            .get_mut()
            .write_all(b"220 no TLS here\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        control.read_line(&mut line).await.unwrap();
        assert_eq!(line, "AUTH TLS\r\n");
        control
            .get_mut()
            .write_all(b"502 AUTH not implemented\r\n")
            .await
            .unwrap();
    });
    let error = ferroftp_client::inspect_tls(address, false, "localhost", LIMIT)
        .await
        .expect_err("AUTH TLS was refused");
    match error {
        ferroftp_client::TlsInspectionError::AuthTlsRefused { code, ref text } => {
            assert_eq!(code.0, 502);
            assert_eq!(text, "AUTH not implemented");
        }
        other => panic!("expected AuthTlsRefused, got {other:?}"),
    }
    assert_eq!(error.to_string(), "AUTH TLS → 502 AUTH not implemented");
    server.await.unwrap();
}
