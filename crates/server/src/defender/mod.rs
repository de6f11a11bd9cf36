//! The defender: bans client addresses that misbehave across connections (ProFTPD's mod_ban,
//! SFTPGo's defender).
//!
//! Each client address has a score, fed by [`DefenderEvent`]s with configurable weights. A
//! score that reaches [`DefenderOptions::threshold`] within one [`DefenderOptions::window`]
//! bans the address for [`DefenderOptions::ban_time`], multiplied by
//! [`DefenderOptions::ban_time_multiplier`] for each earlier ban still remembered, up to
//! [`DefenderOptions::max_ban_time`]. A banned address is refused at accept, before any
//! greeting, and its login attempts are refused without verifying a password.
//!
//! - **Keys.** IPv4 addresses (and IPv4-mapped IPv6 ones) count one by one; IPv6 addresses
//!   count per network of [`DefenderOptions::ipv6_prefix`] bits (64 by default: one host
//!   usually has a whole /64 and picks a new address at will, so banning one address would
//!   stop nothing).
//! - **Memory.** One map entry is a 16-byte key and a 16-byte [`Entry`]: 100,000 banned
//!   addresses take about 4 MiB (the hash table's capacity is a power of two; measured by the
//!   `hundred_thousand_bans_fit_in_a_few_mebibytes` test). The check at accept is one hash
//!   lookup under a mutex that is never held across anything slow.
//! - **Expiry.** Scores are reset lazily, when an event finds its window over; a ban ends
//!   when its time is past. [`Defender::sweep`] (every [`SWEEP_INTERVAL`] from the server's
//!   background jobs) removes entries that are neither banned nor scoring. The number of
//!   earlier bans is remembered for [`DefenderOptions::max_ban_time`] after the last ban
//!   ended, so that a returning attacker's ban grows.
//! - **Windows.** A window starts with the first event of an address and is fixed; this
//!   costs 4 bytes instead of a list of events, and at worst lets an address that spreads its
//!   events over two windows score just under twice the threshold before a ban.
//! - **Persistence.** With [`DefenderOptions::persist`], the bans are written to a text file
//!   (one `address until-unix-seconds ban-count` line each) through a temporary file and a
//!   rename, after bans change (at most once per [`PERSIST_DELAY`]) and at shutdown, and
//!   loaded at start; bans that ended meanwhile are dropped.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tracing::{info, warn};

use crate::telemetry;

/// How often scores and bans that are over are removed.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Most addresses tracked at once (scoring or banned): about 40 MiB. A wave of more addresses
/// than this within one window is not a password guesser the defender can help against.
pub(crate) const MAX_TRACKED: usize = 1_000_000;

/// The longest a change of the bans waits before the persist file is written.
pub(crate) const PERSIST_DELAY: Duration = Duration::from_secs(1);

/// Something a client did that counts against its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DefenderEvent {
    /// PASS with a wrong password for an existing user.
    FailedLogin,
    /// A login as a user that does not exist.
    UnknownUser,
    /// PORT/EPRT naming another host or a privileged port (RFC 2577 §3).
    Bounce,
    /// A passive data connection from another address than the control connection's.
    ForeignDataConnection,
    /// Passive listeners opened and left unused, again and again.
    PassiveFlood,
    /// A line over the length cap, or too many lines queued behind a command.
    ProtocolError,
    /// A TLS handshake on the control connection that failed.
    TlsHandshakeFailure,
}

impl DefenderEvent {
    /// Every event, in the order of the `event` label's documentation.
    pub const ALL: [Self; 7] = [
        Self::FailedLogin,
        Self::UnknownUser,
        Self::Bounce,
        Self::ForeignDataConnection,
        Self::PassiveFlood,
        Self::ProtocolError,
        Self::TlsHandshakeFailure,
    ];

    /// The `event` label of `ferroftp_defender_events_total`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailedLogin => "failed_login",
            Self::UnknownUser => "unknown_user",
            Self::Bounce => "bounce",
            Self::ForeignDataConnection => "foreign_data_connection",
            Self::PassiveFlood => "passive_flood",
            Self::ProtocolError => "protocol_error",
            Self::TlsHandshakeFailure => "tls_handshake_failure",
        }
    }
}

/// The score each event adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefenderWeights {
    /// [`DefenderEvent::FailedLogin`].
    pub failed_login: u32,
    /// [`DefenderEvent::UnknownUser`].
    pub unknown_user: u32,
    /// [`DefenderEvent::Bounce`].
    pub bounce: u32,
    /// [`DefenderEvent::ForeignDataConnection`].
    pub foreign_data_connection: u32,
    /// [`DefenderEvent::PassiveFlood`].
    pub passive_flood: u32,
    /// [`DefenderEvent::ProtocolError`].
    pub protocol_error: u32,
    /// [`DefenderEvent::TlsHandshakeFailure`].
    pub tls_handshake_failure: u32,
}

impl Default for DefenderWeights {
    /// With the default threshold of 15: 5 wrong passwords, 3 unknown users, 3 bounce
    /// attempts, 5 foreign data connections, 3 passive floods, 8 protocol errors or 15 failed
    /// TLS handshakes (scanners probing for old TLS versions fail a handshake each).
    fn default() -> Self {
        Self {
            failed_login: 3,
            unknown_user: 5,
            bounce: 5,
            foreign_data_connection: 3,
            passive_flood: 5,
            protocol_error: 2,
            tls_handshake_failure: 1,
        }
    }
}

impl DefenderWeights {
    /// The weight of `event`.
    pub const fn of(&self, event: DefenderEvent) -> u32 {
        match event {
            DefenderEvent::FailedLogin => self.failed_login,
            DefenderEvent::UnknownUser => self.unknown_user,
            DefenderEvent::Bounce => self.bounce,
            DefenderEvent::ForeignDataConnection => self.foreign_data_connection,
            DefenderEvent::PassiveFlood => self.passive_flood,
            DefenderEvent::ProtocolError => self.protocol_error,
            DefenderEvent::TlsHandshakeFailure => self.tls_handshake_failure,
        }
    }
}

/// The defender's policy (`[defender]` in the configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct DefenderOptions {
    /// Off: nothing is scored and nobody is banned (bans loaded or made before stay
    /// unenforced until it is on again).
    pub enabled: bool,
    /// The score that bans an address.
    pub threshold: u32,
    /// How long a score is gathered before it starts again from zero.
    pub window: Duration,
    /// The first ban's length.
    pub ban_time: Duration,
    /// Each further ban of the same address lasts this many times the previous one.
    pub ban_time_multiplier: f64,
    /// The longest ban.
    pub max_ban_time: Duration,
    /// Score of each event.
    pub weights: DefenderWeights,
    /// Networks never scored nor banned.
    pub allow: Vec<IpNet>,
    /// IPv6 addresses are scored and banned per network of this many bits (1–128).
    pub ipv6_prefix: u8,
    /// Where bans are kept across restarts.
    pub persist: Option<PathBuf>,
}

impl Default for DefenderOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 15,
            window: Duration::from_secs(10 * 60),
            ban_time: Duration::from_secs(15 * 60),
            ban_time_multiplier: 2.0,
            max_ban_time: Duration::from_secs(24 * 60 * 60),
            weights: DefenderWeights::default(),
            allow: Vec::new(),
            ipv6_prefix: 64,
            persist: None,
        }
    }
}

/// The address (or IPv6 network) a score belongs to: 16 bytes, IPv4 as IPv4-mapped IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key(u128);

/// One address's state: 16 bytes. Times are whole seconds since the defender's start
/// (`u32`: 136 years).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    score: u32,
    /// Start of the window the score belongs to.
    window_start: u32,
    /// The ban ends at this second; 0 when never banned.
    banned_until: u32,
    /// Bans so far (remembered after the last one ended, to make the next one longer).
    bans: u32,
}

/// A ban, as the admin listener and the persist file show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRecord {
    /// The address, or the IPv6 network (`2001:db8:1:2::/64`).
    pub address: String,
    /// When it ends.
    pub until: SystemTime,
    /// Bans of this address so far, this one included.
    pub bans: u32,
}

/// What [`Defender::record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Scored (or ignored: allowed address, defender off, weight 0).
    Counted,
    /// This event banned the address, for this long.
    Banned(Duration),
}

/// The defender's state, shared by every configuration generation.
#[derive(Debug)]
pub struct Defender {
    options: RwLock<Arc<DefenderOptions>>,
    entries: Mutex<HashMap<Key, Entry>>,
    /// `Instant` and wall clock at the defender's start: second 0 of [`Entry`]'s times.
    base: Instant,
    base_wall: SystemTime,
    /// Bans changed since the persist file was written.
    dirty: AtomicBool,
    /// Counts bans made: logins waiting for a verification watch it (`until_banned`).
    ban_epoch: tokio::sync::watch::Sender<u64>,
    changed: tokio::sync::Notify,
}

impl Defender {
    /// An empty defender (no bans loaded).
    pub fn new(options: DefenderOptions) -> Self {
        Self {
            options: RwLock::new(Arc::new(options)),
            entries: Mutex::new(HashMap::new()),
            base: Instant::now(),
            base_wall: SystemTime::now(),
            dirty: AtomicBool::new(false),
            ban_epoch: tokio::sync::watch::channel(0).0,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The policy now.
    pub fn options(&self) -> Arc<DefenderOptions> {
        Arc::clone(&self.options.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A new policy, for the next events and checks (a reload); bans in force stay.
    pub fn set_options(&self, options: DefenderOptions) {
        *self.options.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(options);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds since the defender's start.
    fn second(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.base).as_secs()).unwrap_or(u32::MAX)
    }

    fn key(options: &DefenderOptions, ip: IpAddr) -> Key {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Key(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => {
                let bits = u32::from(options.ipv6_prefix.clamp(1, 128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                Key(u128::from(v6) & mask)
            }
        }
    }

    fn key_name(options: &DefenderOptions, key: Key) -> String {
        let v6 = Ipv6Addr::from(key.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None if options.ipv6_prefix >= 128 => v6.to_string(),
            None => format!("{v6}/{}", options.ipv6_prefix),
        }
    }

    fn is_allowed(options: &DefenderOptions, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        options.allow.iter().any(|network| network.contains(&ip))
    }

    /// Whether `ip` is banned now: the check at accept and before a password is verified.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.is_banned_at(ip, Instant::now())
    }

    fn is_banned_at(&self, ip: IpAddr, now: Instant) -> bool {
        let options = self.options();
        if !options.enabled || Self::is_allowed(&options, ip) {
            return false;
        }
        let key = Self::key(&options, ip);
        let second = self.second(now);
        self.lock()
            .get(&key)
            .is_some_and(|entry| entry.banned_until > second)
    }

    /// Completes once `ip` is banned (at once if it is now): a login waiting for its password
    /// verification gives up, and, with the file authenticator, a verification still queued
    /// is skipped.
    pub async fn until_banned(&self, ip: IpAddr) {
        // Subscribed before the check, so a ban between the two is not missed.
        let mut bans = self.ban_epoch.subscribe();
        loop {
            if self.is_banned(ip) {
                return;
            }
            if bans.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Counts `event` against `ip`; bans it when its score reaches the threshold. The ban is
    /// logged here, once.
    pub fn record(&self, ip: IpAddr, event: DefenderEvent) -> Verdict {
        self.record_at(ip, event, Instant::now())
    }

    fn record_at(&self, ip: IpAddr, event: DefenderEvent, now: Instant) -> Verdict {
        let options = self.options();
        let weight = options.weights.of(event);
        if !options.enabled || weight == 0 || Self::is_allowed(&options, ip) {
            return Verdict::Counted;
        }
        telemetry::defender_event(event);
        let key = Self::key(&options, ip);
        let second = self.second(now);
        let window = u32::try_from(options.window.as_secs()).unwrap_or(u32::MAX);
        let banned_for = {
            let mut entries = self.lock();
            if entries.len() >= MAX_TRACKED && !entries.contains_key(&key) {
                // Full: what is over goes now rather than at the next sweep; if the table is
                // still full, the event is not scored (bans in force stay enforced).
                retain_live(&mut entries, &options, second);
                if entries.len() >= MAX_TRACKED {
                    return Verdict::Counted;
                }
            }
            let entry = entries.entry(key).or_default();
            if entry.banned_until > second {
                // Already banned (an in-flight session): nothing more to count.
                return Verdict::Counted;
            }
            if entry.score == 0 || second.saturating_sub(entry.window_start) >= window {
                entry.score = 0;
                entry.window_start = second;
            }
            entry.score = entry.score.saturating_add(weight);
            if entry.score < options.threshold {
                return Verdict::Counted;
            }
            // Forget earlier bans that ended longer than the longest ban ago.
            let memory = u32::try_from(options.max_ban_time.as_secs()).unwrap_or(u32::MAX);
            if entry.bans > 0 && second.saturating_sub(entry.banned_until) > memory {
                entry.bans = 0;
            }
            let length = ban_length(&options, entry.bans);
            entry.bans = entry.bans.saturating_add(1);
            entry.score = 0;
            entry.banned_until = second.saturating_add(seconds_rounded_up(length));
            (length, entry.bans)
        };
        let (length, bans) = banned_for;
        warn!(
            client = %Self::key_name(&options, key),
            event = event.as_str(),
            ban_s = length.as_secs(),
            bans,
            "client address banned"
        );
        telemetry::defender_ban();
        self.ban_epoch.send_modify(|epoch| *epoch += 1);
        self.mark_changed();
        Verdict::Banned(length)
    }

    /// Lifts the ban of `ip` (or of its IPv6 network) and forgets its score; `false` when it
    /// was not banned.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let options = self.options();
        let key = Self::key(&options, ip);
        let second = self.second(Instant::now());
        let removed = self.lock().remove(&key);
        let was_banned = removed.is_some_and(|entry| entry.banned_until > second);
        if was_banned {
            info!(client = %Self::key_name(&options, key), "ban lifted");
            self.mark_changed();
        }
        was_banned
    }

    /// The bans in force, oldest end first.
    pub fn bans(&self) -> Vec<BanRecord> {
        let options = self.options();
        let now = Instant::now();
        let second = self.second(now);
        let mut found: Vec<(Key, Entry)> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.banned_until > second)
            .map(|(key, entry)| (*key, *entry))
            .collect();
        found.sort_by_key(|(key, entry)| (entry.banned_until, *key));
        found
            .into_iter()
            .map(|(key, entry)| BanRecord {
                address: Self::key_name(&options, key),
                until: self.wall_time(entry.banned_until),
                bans: entry.bans,
            })
            .collect()
    }

    /// Addresses banned now.
    pub fn banned_count(&self) -> usize {
        let second = self.second(Instant::now());
        self.lock()
            .values()
            .filter(|entry| entry.banned_until > second)
            .count()
    }

    fn wall_time(&self, second: u32) -> SystemTime {
        self.base_wall + Duration::from_secs(u64::from(second))
    }

    /// Removes what is over: scores whose window ended and bans long forgotten. Returns the
    /// entries left.
    pub fn sweep(&self) -> usize {
        self.sweep_at(Instant::now())
    }

    fn sweep_at(&self, now: Instant) -> usize {
        let options = self.options();
        let second = self.second(now);
        let mut entries = self.lock();
        retain_live(&mut entries, &options, second);
        // Gives memory back after a wave of addresses has passed.
        if entries.capacity() > 1024 && entries.len() < entries.capacity() / 4 {
            entries.shrink_to_fit();
        }
        entries.len()
    }

    fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// The persist file's text: one `address until-unix-seconds bans` line per ban in force.
    fn persist_text(&self) -> String {
        let mut text = String::from("# ferroftp defender bans: address until-unix-seconds bans\n");
        for ban in self.bans() {
            let until = ban
                .until
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            let _ = writeln!(text, "{} {until} {}", ban.address, ban.bans);
        }
        text
    }

    /// Writes the bans to `options.persist` (temporary file, then rename), if set.
    pub fn save(&self) -> io::Result<()> {
        let options = self.options();
        let Some(path) = &options.persist else {
            return Ok(());
        };
        self.dirty.store(false, Ordering::Relaxed);
        write_atomically(path, self.persist_text().as_bytes())
    }

    /// Loads the bans of `options.persist`, if set and present; bans that ended are dropped.
    /// Returns how many were loaded.
    pub fn load(&self) -> io::Result<usize> {
        let options = self.options();
        let Some(path) = &options.persist else {
            return Ok(0);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error),
        };
        let now_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let second = self.second(Instant::now());
        let mut loaded = 0;
        let mut entries = self.lock();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((address, until, bans)) = parse_persisted(line) else {
                warn!(
                    line,
                    "defender: unreadable line in the persist file, skipped"
                );
                continue;
            };
            if until <= now_wall {
                continue;
            }
            let remaining = u32::try_from(until - now_wall).unwrap_or(u32::MAX);
            entries.insert(
                Self::key(&options, address),
                Entry {
                    score: 0,
                    window_start: second,
                    banned_until: second.saturating_add(remaining),
                    bans,
                },
            );
            loaded += 1;
        }
        Ok(loaded)
    }

    /// The background job: sweeps every minute (`SWEEP_INTERVAL`) and writes the persist
    /// file after bans changed (at most once a second, `PERSIST_DELAY`). Runs until aborted.
    pub async fn maintain(self: Arc<Self>) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    self.sweep();
                }
                () = self.changed.notified() => {
                    tokio::time::sleep(PERSIST_DELAY).await;
                }
            }
            metrics::gauge!(telemetry::DEFENDER_BANNED_ADDRESSES).set(self.banned_count() as f64);
            if self.dirty.load(Ordering::Relaxed)
                && let Err(error) = self.save()
            {
                warn!(%error, "defender: cannot write the persist file");
            }
        }
    }
}

/// Keeps the entries still scoring, banned, or remembering earlier bans at `second`.
fn retain_live(entries: &mut HashMap<Key, Entry>, options: &DefenderOptions, second: u32) {
    let window = u32::try_from(options.window.as_secs()).unwrap_or(u32::MAX);
    let memory = u32::try_from(options.max_ban_time.as_secs()).unwrap_or(u32::MAX);
    entries.retain(|_, entry| {
        let scoring = entry.score > 0 && second.saturating_sub(entry.window_start) < window;
        let banned = entry.banned_until > second;
        let remembered = entry.bans > 0 && second.saturating_sub(entry.banned_until) <= memory;
        scoring || banned || remembered
    });
}

/// How long ban number `earlier + 1` lasts.
fn ban_length(options: &DefenderOptions, earlier: u32) -> Duration {
    let factor = options
        .ban_time_multiplier
        .max(1.0)
        .powi(i32::try_from(earlier).unwrap_or(i32::MAX));
    let seconds = options.ban_time.as_secs_f64() * factor;
    let length = if seconds.is_finite() {
        Duration::try_from_secs_f64(seconds).unwrap_or(options.max_ban_time)
    } else {
        options.max_ban_time
    };
    length.min(options.max_ban_time)
}

fn seconds_rounded_up(length: Duration) -> u32 {
    let whole = length.as_secs() + u64::from(length.subsec_nanos() > 0);
    u32::try_from(whole.max(1)).unwrap_or(u32::MAX)
}

/// `address until bans`; the address may be an IPv6 network (`2001:db8::/64`).
fn parse_persisted(line: &str) -> Option<(IpAddr, u64, u32)> {
    let mut fields = line.split_whitespace();
    let address = fields.next()?;
    let address = address
        .split_once('/')
        .map_or(address, |(address, _)| address);
    let address: IpAddr = address.parse().ok()?;
    let until = fields.next()?.parse().ok()?;
    let bans = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((address, until, bans))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`:
/// a crash leaves the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(".tmp");
    let temporary = path.with_file_name(temporary_name);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests;
