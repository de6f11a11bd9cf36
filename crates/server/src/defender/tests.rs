use std::net::Ipv4Addr;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn options() -> DefenderOptions {
    DefenderOptions {
        threshold: 15,
        window: Duration::from_secs(60),
        ban_time: Duration::from_secs(100),
        ban_time_multiplier: 2.0,
        max_ban_time: Duration::from_secs(250),
        ..DefenderOptions::default()
    }
}

#[test]
fn five_failed_logins_ban_but_four_do_not() {
    let defender = Defender::new(options());
    let start = defender.base;
    let client = ip("192.0.2.7");
    for _ in 0..4 {
        assert_eq!(
            defender.record_at(client, DefenderEvent::FailedLogin, start),
            Verdict::Counted
        );
    }
    assert!(!defender.is_banned_at(client, start));
    assert_eq!(
        defender.record_at(client, DefenderEvent::FailedLogin, start),
        Verdict::Banned(Duration::from_secs(100))
    );
    assert!(defender.is_banned_at(client, start));
    assert!(defender.is_banned_at(client, start + Duration::from_secs(99)));
    assert!(!defender.is_banned_at(client, start + Duration::from_secs(100)));
    assert!(!defender.is_banned_at(ip("192.0.2.8"), start));
}

#[test]
fn a_score_expires_with_its_window() {
    let defender = Defender::new(options());
    let start = defender.base;
    let client = ip("192.0.2.7");
    for _ in 0..4 {
        defender.record_at(client, DefenderEvent::FailedLogin, start);
    }
    let later = start + Duration::from_secs(61);
    for _ in 0..4 {
        assert_eq!(
            defender.record_at(client, DefenderEvent::FailedLogin, later),
            Verdict::Counted
        );
    }
    assert!(!defender.is_banned_at(client, later));
    // The sweep removes a score whose window is over.
    assert_eq!(defender.sweep_at(later + Duration::from_secs(61)), 0);
}

#[test]
fn bans_grow_with_each_repeat_up_to_the_cap() {
    let defender = Defender::new(options());
    let client = ip("198.51.100.1");
    let mut now = defender.base;
    let mut lengths = Vec::new();
    for _ in 0..4 {
        let verdict = (0..5)
            .map(|_| defender.record_at(client, DefenderEvent::FailedLogin, now))
            .last()
            .unwrap();
        let Verdict::Banned(length) = verdict else {
            panic!("not banned: {verdict:?}")
        };
        lengths.push(length.as_secs());
        now += length;
        assert!(!defender.is_banned_at(client, now));
    }
    assert_eq!(lengths, [100, 200, 250, 250]);
    // Remembered while banned and for max_ban_time after, then forgotten.
    assert_eq!(defender.sweep_at(now + Duration::from_secs(250)), 1);
    assert_eq!(defender.sweep_at(now + Duration::from_secs(252)), 0);
}

#[test]
fn allowed_networks_are_never_banned() {
    let defender = Defender::new(DefenderOptions {
        allow: vec!["10.0.0.0/8".parse().unwrap()],
        ..options()
    });
    let start = defender.base;
    for _ in 0..20 {
        assert_eq!(
            defender.record_at(ip("10.1.2.3"), DefenderEvent::UnknownUser, start),
            Verdict::Counted
        );
    }
    assert!(!defender.is_banned_at(ip("10.1.2.3"), start));
    assert!(defender.bans().is_empty());
    // IPv4-mapped IPv6 addresses are the IPv4 address.
    assert!(!defender.is_banned_at(ip("::ffff:10.1.2.3"), start));
}

#[test]
fn ipv6_addresses_are_banned_per_network_and_mapped_ipv4_as_ipv4() {
    let defender = Defender::new(options());
    let start = defender.base;
    for _ in 0..3 {
        defender.record_at(ip("2001:db8:1:2::1"), DefenderEvent::UnknownUser, start);
    }
    assert!(defender.is_banned_at(ip("2001:db8:1:2:ffff::9"), start));
    assert!(!defender.is_banned_at(ip("2001:db8:1:3::1"), start));
    for _ in 0..3 {
        defender.record_at(ip("::ffff:192.0.2.1"), DefenderEvent::Bounce, start);
    }
    assert!(defender.is_banned_at(ip("192.0.2.1"), start));
    let names: Vec<_> = defender.bans().into_iter().map(|ban| ban.address).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"2001:db8:1:2::/64".to_owned()));
    assert!(names.contains(&"192.0.2.1".to_owned()));
    assert!(defender.unban(ip("2001:db8:1:2::77")));
    assert!(!defender.is_banned_at(ip("2001:db8:1:2::1"), start));
    assert!(!defender.unban(ip("2001:db8:1:2::77")));
}

#[test]
fn new_weights_apply_to_the_next_events_and_bans_stay() {
    let defender = Defender::new(options());
    let start = defender.base;
    for _ in 0..5 {
        defender.record_at(ip("192.0.2.1"), DefenderEvent::FailedLogin, start);
    }
    defender.set_options(DefenderOptions {
        weights: DefenderWeights {
            failed_login: 15,
            ..DefenderWeights::default()
        },
        ..options()
    });
    assert!(defender.is_banned_at(ip("192.0.2.1"), start));
    assert!(matches!(
        defender.record_at(ip("192.0.2.2"), DefenderEvent::FailedLogin, start),
        Verdict::Banned(_)
    ));
    // Off: nothing is enforced.
    defender.set_options(DefenderOptions {
        enabled: false,
        ..options()
    });
    assert!(!defender.is_banned_at(ip("192.0.2.1"), start));
}

#[test]
fn bans_are_persisted_and_loaded_without_the_expired_ones() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("bans");
    let persisting = DefenderOptions {
        persist: Some(path.clone()),
        ..options()
    };
    let defender = Defender::new(persisting.clone());
    for _ in 0..5 {
        defender.record(ip("192.0.2.1"), DefenderEvent::FailedLogin);
    }
    for _ in 0..3 {
        defender.record(ip("2001:db8::5"), DefenderEvent::UnknownUser);
    }
    defender.save().unwrap();
    // A ban that ended before the restart, written by hand.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("192.0.2.99 1000 1\nnot a line\n");
    std::fs::write(&path, text).unwrap();

    let restarted = Defender::new(persisting);
    assert_eq!(restarted.load().unwrap(), 2);
    assert!(restarted.is_banned(ip("192.0.2.1")));
    assert!(restarted.is_banned(ip("2001:db8::1234")));
    assert!(!restarted.is_banned(ip("192.0.2.99")));
    assert_eq!(restarted.bans()[0].bans, 1);
    assert!(!directory.path().join(".bans.tmp").exists());
}

/// Memory of 100,000 bans: the figure is printed (`--nocapture`), the assertion is only
/// the "few MiB" bound of the design, on the table's own arithmetic.
#[test]
fn hundred_thousand_bans_fit_in_a_few_mebibytes() {
    let defender = Defender::new(DefenderOptions {
        weights: DefenderWeights {
            failed_login: 15,
            ..DefenderWeights::default()
        },
        ..options()
    });
    for index in 0..100_000u32 {
        let address = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + index));
        defender.record(address, DefenderEvent::FailedLogin);
    }
    assert_eq!(defender.banned_count(), 100_000);
    let entries = defender.lock();
    // hashbrown: one bucket (key and entry) and one control byte per slot, plus a group.
    let slot = std::mem::size_of::<(Key, Entry)>() + 1;
    let buckets = (entries.capacity() * 8 / 7).next_power_of_two();
    let bytes = buckets * slot;
    println!(
        "100000 bans: {buckets} slots of {slot} bytes, about {:.1} MiB",
        bytes as f64 / (1024.0 * 1024.0)
    );
    assert_eq!(std::mem::size_of::<(Key, Entry)>(), 32);
    assert!(bytes < 8 * 1024 * 1024, "{bytes} bytes");
    drop(entries);
    assert!(defender.is_banned(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + 99_999))));
    assert!(!defender.is_banned(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
}
