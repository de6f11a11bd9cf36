//! A small async FTP client on tokio, built on `ferroftp-proto`.
//!
//! The server's integration tests, `ferroftp doctor` and the benchmark use it, so it parses
//! replies with the same [`ReplyParser`](ferroftp_proto::ReplyParser) and formats data
//! addresses with the same [`host_port`](ferroftp_proto::host_port) functions as the server:
//! client and server share one grammar.
//!
//! It is precise rather than forgiving: [`Client::command`] reads exactly one reply and skips
//! nothing, [`Client::send_raw`] and [`Client::read_reply`] let tests send malformed bytes, and
//! every network wait is bounded by [`ClientOptions::timeout`].
//!
//! ```no_run
//! # async fn example() -> Result<(), ferroftp_client::ClientError> {
//! use ferroftp_client::{Client, DataMode};
//!
//! let (mut client, _greeting) = Client::connect("127.0.0.1:2121").await?;
//! client.login("alice", "secret").await?;
//! let bytes = client.retrieve("/docs/a.txt", DataMode::ExtendedPassive).await?;
//! client.store("/docs/b.txt", DataMode::Passive, &bytes).await?;
//! client.quit().await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod control;
mod data;
mod error;
mod probe;
mod tls;

pub use client::{Client, ClientOptions};
pub use control::MAX_REPLY_LINE;
pub use data::{DataMode, DataStream, PreparedData};
pub use error::ClientError;
pub use ferroftp_proto::{Reply, ReplyCode};
pub use probe::{
    ActiveOffer, ConnectAttempt, ConnectFailure, TlsInspection, TlsInspectionError, TransferProbe,
    connect_timed, inspect_tls,
};
pub use tls::{ClientTls, MaybeTls, ServerVerification, TlsVersion};
