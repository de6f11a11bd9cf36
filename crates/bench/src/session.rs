//! One logged-in session of the benchmark and the transfers it runs, on `ferroftp-client`.
//!
//! Transfers copy through a buffer the caller owns and reuses, and downloads go to no sink at
//! all: the loops allocate nothing per chunk. Every network wait is bounded by the client's
//! timeout. Failures are short stable kinds (`RETR:550`, `data-read:timeout`) that the
//! report counts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferroftp_client::{
    Client, ClientError, ClientOptions, DataMode, DataStream, PreparedData, Reply, ReplyCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use ferroftp_config::PortRange;

/// Most distinct failure kinds kept per run; more are counted under `other`.
const MAX_FAILURE_KINDS: usize = 50;

/// Why one operation failed: a short stable kind such as `RETR:550`, `login:timeout` or
/// `data-read:ConnectionReset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure(pub String);

impl Failure {
    /// A failure of `stage` caused by a client error.
    pub(crate) fn client(stage: &str, error: &ClientError) -> Self {
        Self(match error {
            ClientError::Io(io) => format!("{stage}:{:?}", io.kind()),
            ClientError::Timeout => format!("{stage}:timeout"),
            ClientError::UnexpectedReply(reply) => format!("{stage}:{}", reply.code),
            ClientError::Protocol(_) => format!("{stage}:protocol"),
            _ => format!("{stage}:error"),
        })
    }

    /// A failure described by its kind.
    pub(crate) fn new(kind: impl Into<String>) -> Self {
        Self(kind.into())
    }

    /// The same failure, prefixed by the phase it happened in (`login:` + `PASS:530`).
    pub(crate) fn within(self, phase: &str) -> Self {
        Self(format!("{phase}:{}", self.0))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Failures counted by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FailureTally {
    kinds: BTreeMap<String, u64>,
}

impl FailureTally {
    /// Counts one failure.
    pub(crate) fn add(&mut self, failure: &Failure) {
        let kind = if self.kinds.len() < MAX_FAILURE_KINDS || self.kinds.contains_key(&failure.0) {
            failure.0.clone()
        } else {
            "other".to_owned()
        };
        *self.kinds.entry(kind).or_insert(0) += 1;
    }

    /// Adds another tally's counts.
    pub(crate) fn merge(&mut self, other: FailureTally) {
        for (kind, count) in other.kinds {
            *self.kinds.entry(kind).or_insert(0) += count;
        }
    }

    /// All failures.
    pub(crate) fn total(&self) -> u64 {
        self.kinds.values().sum()
    }

    /// Count per kind.
    pub(crate) fn kinds(&self) -> &BTreeMap<String, u64> {
        &self.kinds
    }
}

/// How data connections are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataChannel {
    /// The server listens: EPSV or PASV.
    Passive(DataMode),
    /// The client listens (PORT on IPv4, EPRT on IPv6), on a port of `ports` when given.
    Active {
        /// Where the client's listeners may bind; any free port when `None`.
        ports: Option<PortRange>,
    },
}

/// Where the server and the account are.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The control address, resolved once.
    pub address: SocketAddr,
    /// Account name.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The longest wait for any one network event.
    pub timeout: Duration,
}

/// The first greeting other than 220 any session got, code and text: what the server said
/// when it refused a session.
static FIRST_REFUSED_GREETING: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The first refused greeting of this process (`421 Too many sessions from your address`).
pub(crate) fn first_refused_greeting() -> Option<&'static str> {
    FIRST_REFUSED_GREETING.get().map(String::as_str)
}

/// The next active-mode port to try, shared by all sessions so they spread over the range.
static NEXT_ACTIVE_PORT: AtomicUsize = AtomicUsize::new(0);

/// One logged-in control connection.
#[derive(Debug)]
pub(crate) struct Session {
    client: Client,
    timeout: Duration,
}

impl Session {
    /// Connects, reads the greeting (a 120 then the 220) and logs in. Returns the session and
    /// the greeting.
    pub(crate) async fn open(endpoint: &Endpoint) -> Result<(Self, Reply), Failure> {
        let options = ClientOptions {
            timeout: endpoint.timeout,
        };
        let (mut client, mut greeting) = Client::connect_with_options(endpoint.address, options)
            .await
            .map_err(|error| Failure::client("connect", &error))?;
        if greeting.code == ReplyCode(120) {
            greeting = client
                .read_reply()
                .await
                .map_err(|error| Failure::client("greeting", &error))?;
        }
        if greeting.code != ReplyCode::SERVICE_READY {
            // The kind stays short for the tally; the server's words are kept once, for
            // the explanation (a 421 here is usually a session limit).
            let _ = FIRST_REFUSED_GREETING.set(format!("{} {}", greeting.code, greeting.text()));
            return Err(Failure::new(format!("greeting:{}", greeting.code)));
        }
        client
            .login(&endpoint.user, &endpoint.password)
            .await
            .map_err(|error| login_failure(&error))?;
        let session = Self {
            client,
            timeout: endpoint.timeout,
        };
        Ok((session, greeting))
    }

    /// Sends `line` and requires a reply with code `expected`; the failure kind is the
    /// command's verb and the code received.
    pub(crate) async fn expect(
        &mut self,
        line: &str,
        expected: ReplyCode,
    ) -> Result<Reply, Failure> {
        let verb = verb_of(line);
        let reply = self
            .client
            .command(line)
            .await
            .map_err(|error| Failure::client(verb, &error))?;
        if reply.code == expected {
            Ok(reply)
        } else {
            Err(Failure::new(format!("{verb}:{}", reply.code)))
        }
    }

    /// Sends `line` and returns whatever reply comes.
    pub(crate) async fn command(&mut self, line: &str) -> Result<Reply, Failure> {
        self.client
            .command(line)
            .await
            .map_err(|error| Failure::client(verb_of(line), &error))
    }

    /// `SIZE path`: the size on a 213 reply, `None` on any other reply (no such file).
    pub(crate) async fn size(&mut self, path: &str) -> Result<Option<u64>, Failure> {
        let reply = self.command(&format!("SIZE {path}")).await?;
        if reply.code != ReplyCode(213) {
            return Ok(None);
        }
        Ok(reply.text().trim().parse().ok())
    }

    /// Sends QUIT and reads its reply.
    pub(crate) async fn quit(mut self) -> Result<(), Failure> {
        let reply = self.command("QUIT").await?;
        if reply.code == ReplyCode::CLOSING || reply.code == ReplyCode::OK {
            Ok(())
        } else {
            Err(Failure::new(format!("QUIT:{}", reply.code)))
        }
    }

    /// Runs a download (`RETR f`, `LIST d`, `MLSD d`) over a new data connection, reading
    /// into `buffer` and keeping nothing. Returns the bytes and line feeds received, once the
    /// server confirmed the transfer with a 2yz reply.
    pub(crate) async fn download(
        &mut self,
        line: &str,
        channel: DataChannel,
        buffer: &mut [u8],
    ) -> Result<Received, Failure> {
        self.download_with(line, channel, buffer, |_| {}).await
    }

    /// Like [`download`](Self::download), handing each chunk read to `sink` as well.
    pub(crate) async fn download_with(
        &mut self,
        line: &str,
        channel: DataChannel,
        buffer: &mut [u8],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<Received, Failure> {
        let verb = verb_of(line);
        let mut stream = self.start_transfer(line, channel).await?;
        let mut received = Received::default();
        let outcome = loop {
            match tokio::time::timeout(self.timeout, stream.read(buffer)).await {
                Err(_elapsed) => break Err(Failure::new("data-read:timeout")),
                Ok(Err(error)) => break Err(Failure::new(format!("data-read:{:?}", error.kind()))),
                Ok(Ok(0)) => break Ok(()),
                Ok(Ok(count)) => {
                    received.count(&buffer[..count]);
                    sink(&buffer[..count]);
                }
            }
        };
        drop(stream);
        self.end_transfer(verb, outcome).await?;
        Ok(received)
    }

    /// Uploads `total` bytes to `path` (STOR) over a new data connection, in chunks of
    /// `buffer`'s size that `fill` writes before each is sent (a no-op `fill` sends the
    /// buffer's content again and again). Returns once the server confirmed the transfer with
    /// a 2yz reply.
    pub(crate) async fn upload(
        &mut self,
        path: &str,
        channel: DataChannel,
        total: u64,
        buffer: &mut [u8],
        mut fill: impl FnMut(&mut [u8]),
    ) -> Result<(), Failure> {
        assert!(!buffer.is_empty(), "an upload needs a non-empty buffer");
        let mut stream = self
            .start_transfer(&format!("STOR {path}"), channel)
            .await?;
        let timeout = self.timeout;
        let outcome = async {
            let mut left = total;
            while left > 0 {
                let count =
                    usize::try_from(left).map_or(buffer.len(), |left| left.min(buffer.len()));
                let chunk = &mut buffer[..count];
                fill(chunk);
                match tokio::time::timeout(timeout, stream.write_all(chunk)).await {
                    Err(_elapsed) => return Err(Failure::new("data-write:timeout")),
                    Ok(Err(error)) => {
                        return Err(Failure::new(format!("data-write:{:?}", error.kind())));
                    }
                    Ok(Ok(())) => left -= count as u64,
                }
            }
            stream
                .close()
                .await
                .map_err(|error| Failure::client("data-close", &error))
        }
        .await;
        self.end_transfer("STOR", outcome).await
    }

    /// Negotiates the data connection and sends the transfer command; returns the open data
    /// stream after the 1yz reply.
    async fn start_transfer(
        &mut self,
        line: &str,
        channel: DataChannel,
    ) -> Result<DataStream, Failure> {
        let prepared = self.prepare_data(channel).await?;
        let (_preliminary, stream) = self
            .client
            .transfer_command(line, prepared)
            .await
            .map_err(|error| Failure::client(verb_of(line), &error))?;
        Ok(stream)
    }

    async fn prepare_data(&mut self, channel: DataChannel) -> Result<PreparedData, Failure> {
        match channel {
            DataChannel::Passive(mode) => self
                .client
                .open_data(mode)
                .await
                .map_err(|error| Failure::client(mode.verb(), &error)),
            DataChannel::Active { ports } => {
                let local = self.client.local_addr().ip();
                let mode = match local {
                    IpAddr::V4(_) => DataMode::Active,
                    IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some() => DataMode::Active,
                    IpAddr::V6(_) => DataMode::ExtendedActive,
                };
                let listener = bind_active_listener(local, ports).await?;
                self.client
                    .open_active_data(mode, listener)
                    .await
                    .map_err(|error| Failure::client(mode.verb(), &error))
            }
        }
    }

    /// Reads the final reply after the data side ended with `outcome`. A data failure wins
    /// unless the server explains it with a negative reply; after a data timeout no reply is
    /// awaited.
    async fn end_transfer(
        &mut self,
        verb: &str,
        outcome: Result<(), Failure>,
    ) -> Result<(), Failure> {
        if let Err(failure) = &outcome
            && failure.0.ends_with(":timeout")
        {
            return outcome;
        }
        let reply = self
            .client
            .finish()
            .await
            .map_err(|error| Failure::client(&format!("{verb}-end"), &error))?;
        if !reply.code.is_positive_completion() {
            return Err(Failure::new(format!("{verb}-end:{}", reply.code)));
        }
        outcome
    }
}

/// What a download delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes.
    pub bytes: u64,
    /// Line feeds (a listing's line count).
    pub lines: u64,
}

impl Received {
    fn count(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        self.lines += chunk.iter().filter(|&&byte| byte == b'\n').count() as u64;
    }
}

/// A login failure: `login:530`, `login:timeout`.
fn login_failure(error: &ClientError) -> Failure {
    Failure::client("login", error)
}

/// Binds the client's listener for an active data connection: on `ip`, port 0 without a
/// range, else the next free port of the range (sessions take turns through it).
async fn bind_active_listener(
    ip: IpAddr,
    ports: Option<PortRange>,
) -> Result<TcpListener, Failure> {
    let Some(range) = ports else {
        return TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|error| Failure::new(format!("active-bind:{:?}", error.kind())));
    };
    let start = NEXT_ACTIVE_PORT.fetch_add(1, Ordering::Relaxed);
    for offset in 0..range.len() {
        let port = active_port(range, start + offset);
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(listener) => return Ok(listener),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(error) => return Err(Failure::new(format!("active-bind:{:?}", error.kind()))),
        }
    }
    Err(Failure::new("active-bind:range-exhausted"))
}

/// The `index`th port of `range`, wrapping around.
fn active_port(range: PortRange, index: usize) -> u16 {
    let offset = u16::try_from(index % range.len()).expect("a port range has at most 65535 ports");
    range.first() + offset
}

/// The verb of a command line, for failure kinds.
fn verb_of(line: &str) -> &str {
    line.split(' ').next().unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_are_short_and_stable() {
        let timeout = Failure::client("RETR", &ClientError::Timeout);
        assert_eq!(timeout.0, "RETR:timeout");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            Failure::client("connect", &ClientError::Io(reset)).0,
            "connect:ConnectionReset"
        );
        assert_eq!(Failure::new("PASS:530").within("login").0, "login:PASS:530");
        assert_eq!(verb_of("RETR a b"), "RETR");
        assert_eq!(verb_of("NOOP"), "NOOP");
    }

    #[test]
    fn tally_counts_and_caps_kinds() {
        let mut tally = FailureTally::default();
        for index in 0..60 {
            tally.add(&Failure::new(format!("kind{index}")));
        }
        tally.add(&Failure::new("kind0"));
        assert_eq!(tally.total(), 61);
        assert_eq!(tally.kinds().len(), MAX_FAILURE_KINDS + 1);
        assert_eq!(tally.kinds()["kind0"], 2);
        assert_eq!(tally.kinds()["other"], 10);
        let mut other = FailureTally::default();
        other.add(&Failure::new("kind0"));
        tally.merge(other);
        assert_eq!(tally.kinds()["kind0"], 3);
    }

    #[test]
    fn received_counts_bytes_and_line_feeds() {
        let mut received = Received::default();
        received.count(b"a\r\nb\r\n");
        received.count(b"c\n");
        assert_eq!(received, Received { bytes: 8, lines: 3 });
    }

    #[test]
    fn active_ports_wrap_around_the_range() {
        let range: PortRange = "40900-40902".parse().unwrap();
        let ports: Vec<u16> = (0..5).map(|index| active_port(range, index)).collect();
        assert_eq!(ports, vec![40900, 40901, 40902, 40900, 40901]);
    }
}
