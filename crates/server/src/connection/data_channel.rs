//! The data channel as the control loop sees it: the passive listener (PASV/EPSV) and the
//! running transfer, started from the session's request with what it needs of the
//! connection and the server, and moved on stage by stage (the stages themselves are in
//! `transfer/`).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use ferroftp_proto::session::{
    DataEndpoint, DataProtection, Outcome, PassiveFailure, TransferFailure, TransferKind,
    TransferRequest,
};
use tracing::{debug, warn};

use super::{ControlConnection, LOG_TARGET, now};
use crate::passive::PassiveError;
use crate::transfer::{
    DataConnectionError, DataSource, DataTls, Event, LogIdentity, Setup, Step, TransferPolicy,
};
use crate::{ActiveSourcePort, DefenderEvent};

/// Every this many passive listeners replaced unused (PASV after PASV with no transfer), one
/// passive flood is scored: a client that lost a data connection retries a few times, one
/// that cycles the port range to map it or to starve others does not stop.
const PASSIVE_FLOOD_UNUSED: u32 = 10;

impl ControlConnection {
    /// Binds a new passive listener (the previous one, if any, is closed first: RFC 959 lets
    /// a new PASV replace the old, and one pending listener per session stops PASV floods).
    pub(super) fn open_passive(&mut self) -> Result<SocketAddr, PassiveFailure> {
        if self.passive.take().is_some() {
            self.unused_passives += 1;
            if self.unused_passives.is_multiple_of(PASSIVE_FLOOD_UNUSED) {
                self.context
                    .defender
                    .record(self.peer.ip(), DefenderEvent::PassiveFlood);
            }
        }
        let local_ip = self.local.ip().to_canonical();
        let client_ip = self.peer.ip().to_canonical();
        match self
            .context
            .passive_pool
            .bind(local_ip, client_ip, &self.user)
        {
            Ok(listener) => {
                let (announced_ip, rule) = self.context.passive_addresses.current().choose(
                    client_ip,
                    self.listener_index,
                    self.stream.is_tls(),
                    local_ip,
                );
                let port = announced_port(listener.port(), self.context.announced_port_offset);
                let announced = SocketAddr::new(announced_ip, port);
                debug!(target: LOG_TARGET, port = listener.port(), address = %announced, %rule, "passive address chosen");
                self.passive = Some(listener);
                Ok(announced)
            }
            Err(PassiveError::Exhausted) => {
                warn!(target: LOG_TARGET,
                    in_use = self.context.passive_pool.ports_in_use(),
                    "passive port range exhausted: widen passive.ports"
                );
                Err(PassiveFailure::Exhausted)
            }
            Err(PassiveError::UserLimit(held)) => {
                warn!(target: LOG_TARGET, held, "passive port refused: passive.max_per_user reached");
                Err(PassiveFailure::Other(format!(
                    "Too many passive ports held by this account ({held}, passive.max_per_user); \
                     try again when a transfer ends"
                )))
            }
            Err(PassiveError::ClientLimit(held)) => {
                warn!(target: LOG_TARGET, held, "passive port refused: passive.max_per_client reached");
                Err(PassiveFailure::Other(format!(
                    "Too many passive ports held from this address ({held}, \
                     passive.max_per_client); try again when a transfer ends"
                )))
            }
            Err(error) => {
                warn!(target: LOG_TARGET, %error, "passive listener failed");
                Err(PassiveFailure::Other(
                    "Can't open passive listener".to_owned(),
                ))
            }
        }
    }

    /// Starts the session's transfer, or tells the session why it cannot start.
    pub(super) fn start_transfer(&mut self, request: TransferRequest) {
        match self.transfer_setup(&request) {
            Ok(setup) => self.transfer.start(request, setup, &self.registration),
            Err(failure) => self
                .session
                .handle_outcome(Outcome::TransferFinished(Err(failure)), now()),
        }
    }

    /// What the transfer of `request` needs of this connection and of the server: where its
    /// data connection comes from, its TLS, the account's buckets and quota, its log identity.
    fn transfer_setup(&mut self, request: &TransferRequest) -> Result<Setup, TransferFailure> {
        let source = match request.endpoint {
            DataEndpoint::Passive => DataSource::Passive {
                listener: self
                    .passive
                    .take()
                    .ok_or(DataConnectionError::NoPassiveListener)?,
                expected_peer: self.peer.ip(),
                proxy: Arc::clone(&self.context.proxy_protocol),
                defender: Arc::clone(&self.context.defender),
            },
            DataEndpoint::Active(target) => DataSource::Active {
                local_ip: self.local.ip().to_canonical(),
                source_port: match self.context.active_source_port {
                    ActiveSourcePort::Any => None,
                    ActiveSourcePort::ControlMinusOne => self.local.port().checked_sub(1),
                },
                target,
            },
        };
        let tls = match request.protection {
            DataProtection::Clear => None,
            DataProtection::Private { require_resumption } => {
                match (&self.context.tls, &self.lineage) {
                    (Some(tls), Some(lineage)) => Some(DataTls {
                        config: tls.data_config(matches!(request.kind, TransferKind::Store { .. })),
                        lineage: lineage.for_data(),
                        require_resumption,
                        handshake_timeout: tls.handshake_timeout,
                    }),
                    _ => return Err(DataConnectionError::TlsNotConfigured.into()),
                }
            }
        };
        let policy = match (&self.user_session, &request.kind) {
            (Some(account), TransferKind::Retrieve { .. }) => TransferPolicy {
                throttle: account.download_throttle(),
                quota: None,
            },
            (Some(account), TransferKind::Store { .. }) => TransferPolicy {
                throttle: account.upload_throttle(),
                quota: account.quota(),
            },
            _ => TransferPolicy::default(),
        };
        let per_user_metrics = self.registration.status().per_user_metrics();
        Ok(Setup {
            storage: Arc::clone(&self.storage),
            source,
            tls,
            options: self.context.data.clone(),
            policy,
            identity: LogIdentity {
                session: self.id,
                client: self.peer,
                user: self.user.clone(),
                observer: self.context.transfer_observer.clone(),
            },
            metrics_user: self
                .session
                .user_name()
                .filter(|_| per_user_metrics)
                .map(str::to_owned),
        })
    }

    /// ABOR: stops the running transfer, if a stage that can stop runs.
    pub(super) fn abort_transfer(&mut self) {
        if let Some(outcome) = self.transfer.abort(&self.registration) {
            self.session.handle_outcome(outcome, now());
        }
    }

    /// Moves the transfer on through every stage that completes without waiting; `false`
    /// when the client is gone. A small download is prepared, sent and finished here, so
    /// its preliminary and final replies (150 and 226) leave in one write after the data,
    /// with no trip through the event loop. Any stage that would wait (for the client, the
    /// disk or a thread) stops this, and the replies queued so far are flushed before the
    /// loop waits, so no client ever waits for a 150 that the server holds back. RFC 959
    /// §5.4 orders the replies, not replies against data bytes on the other connection.
    pub(super) fn advance_while_ready(&mut self) -> bool {
        while let Some(event) = self.transfer.ready_event() {
            if !self.advance_transfer(event) {
                return false;
            }
        }
        true
    }

    /// Moves the transfer on by one stage; `false` when the client is gone.
    pub(super) fn advance_transfer(&mut self, event: Event) -> bool {
        let control = self.stream.tcp().ok().map(AsFd::as_fd);
        match self.transfer.advance(event, control, &self.registration) {
            Step::Continue => true,
            Step::Tell(outcome) => {
                self.session.handle_outcome(outcome, now());
                true
            }
            Step::ClientGone => false,
        }
    }
}

/// The port announced for a listening passive port (`passive.advertise_ports` maps the range
/// 1:1; validated to fit at start).
fn announced_port(listening: u16, offset: i32) -> u16 {
    u16::try_from(i32::from(listening) + offset).unwrap_or(listening)
}
