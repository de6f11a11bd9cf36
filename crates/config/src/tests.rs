//! The schema, its values and its validation, from configuration text.

use std::time::Duration;

use crate::*;

const SAMPLE: &str = r#"
[server]
idle_timeout = "5m"            # humantime duration
max_sessions = 1000
max_sessions_per_ip = 50
threads = 2                    # session threads; default one per CPU
failed_login_delay = "1s"
max_failed_logins = 3          # then 421 and close
greeting = "ferroftp ready"
[[server.listeners]]
listen = "0.0.0.0:2121"        # default one listener like this when none given
tls = "off"
[passive]
ports = "50000-50100"
advertise = "203.0.113.7"      # optional IP
accept_timeout = "30s"
[active]
enabled = true
connect_timeout = "10s"
[data]
idle_timeout = "5m"
[storage]
kind = "fs"
root = "./ftp-root"
fsync_uploads = false
chmod_mask = 0o700
partial_expiry = "2h"
[auth]
kind = "file"
path = "users.toml"
anonymous = false
"#;

const NAT_SAMPLE: &str = r#"
[[server.listeners]]
listen = "0.0.0.0:2121"
advertise = "198.51.100.1"
[passive]
ports = "50000-50100"
advertise = "ftp.example.com"
advertise_refresh = "30s"
advertise_tls = "203.0.113.8"
advertise_ports = "60000-60100"
reuse_delay = "10s"
[[passive.advertise_by_client]]
cidr = "192.168.0.0/16"
address = "192.168.1.10"
[active]
source_port = "control-minus-one"
nat_fallback = true
[proxy_protocol]
trusted = ["10.0.0.0/8", "fd00::/8"]
header_timeout = "2s"
"#;

#[test]
fn nat_settings_parse() {
    let config = Config::parse(NAT_SAMPLE).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    assert_eq!(
        config.server.listeners[0].advertise,
        Some("198.51.100.1".parse().unwrap())
    );
    assert_eq!(
        config.passive.advertise,
        Some(AdvertiseAddress::Name("ftp.example.com".to_owned()))
    );
    assert_eq!(config.passive.advertise_ports.unwrap().len(), 101);
    assert_eq!(
        config.passive.advertise_by_client[0].cidr,
        "192.168.0.0/16".parse().unwrap()
    );
    assert_eq!(
        config.active.source_port,
        ActiveSourcePortConfig::ControlMinusOne
    );
    assert!(config.active.nat_fallback);
    assert_eq!(config.proxy_protocol.trusted.len(), 2);
    assert_eq!(config.proxy_protocol.header_timeout, Duration::from_secs(2));
}

#[test]
fn nat_settings_are_validated() {
    let text = r#"
[passive]
ports = "50000-50100"
advertise = "not a name!"
"#;
    assert!(
        error_of(text).contains("neither an IP address nor a DNS name"),
        "{}",
        error_of(text)
    );
    let text = r#"
[passive]
ports = "50000-50100"
advertise_ports = "60000-60009"
advertise_tls = "0.0.0.0"
"#;
    let problems = Config::parse(text).unwrap().validate();
    assert_eq!(
        fields(&problems),
        ["passive.advertise_tls", "passive.advertise_ports"]
    );
}

fn error_of(text: &str) -> String {
    format!("{:#}", Config::parse(text).unwrap_err())
}

fn fields(problems: &[ConfigProblem]) -> Vec<&str> {
    problems
        .iter()
        .map(|problem| problem.field.as_str())
        .collect()
}

#[test]
fn empty_file_gives_the_defaults() {
    let config = Config::parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.server.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.server.max_sessions, 1000);
    assert_eq!(config.server.max_sessions_per_ip, 50);
    assert_eq!(config.server.threads, None);
    assert_eq!(config.server.failed_login_delay, Duration::from_secs(1));
    assert_eq!(config.server.max_failed_logins, 3);
    assert_eq!(config.server.greeting, "ferroftp ready");
    assert_eq!(
        config.server.listeners,
        [ListenerConfig {
            listen: "0.0.0.0:2121".parse().unwrap(),
            tls: TlsMode::Off,
            advertise: None,
            name: None,
        }]
    );
    assert_eq!(config.passive.ports, PortRange::new(50000, 50100).unwrap());
    assert_eq!(config.passive.advertise, None);
    assert_eq!(config.passive.accept_timeout, Duration::from_secs(30));
    assert!(config.active.enabled);
    assert_eq!(config.active.connect_timeout, Duration::from_secs(10));
    assert_eq!(config.data.idle_timeout, Duration::from_secs(300));
    assert_eq!(
        config.storage,
        StorageConfig::Fs {
            root: "./ftp-root".into(),
            fsync_uploads: true,
            chmod_mask: 0o755,
            partial_expiry: DEFAULT_PARTIAL_EXPIRY,
        }
    );
    assert_eq!(
        config.auth.backend,
        AuthBackendConfig::File {
            path: "users.toml".into()
        }
    );
    assert!(!config.auth.anonymous);
    assert_eq!(config.validate(), []);
    assert_eq!(
        FirewallSummary::of_config(&config).to_string(),
        "open TCP ports 2121 (control) and 50000-50100 (passive data)"
    );
}

#[test]
fn parses_the_sample() {
    let config = Config::parse(SAMPLE).unwrap();
    let expected = Config {
        server: ServerConfig {
            threads: Some(2),
            ..ServerConfig::default()
        },
        passive: PassiveConfig {
            advertise: Some("203.0.113.7".parse().unwrap()),
            ..PassiveConfig::default()
        },
        storage: StorageConfig::Fs {
            root: "./ftp-root".into(),
            fsync_uploads: false,
            chmod_mask: 0o700,
            partial_expiry: Duration::from_secs(2 * 3600),
        },
        ..Config::default()
    };
    assert_eq!(config, expected);
    assert_eq!(config.validate(), []);
}

#[test]
fn the_anonymous_home_is_an_absolute_path_in_the_storage() {
    let config = Config::parse("[auth]\nanonymous_home = \"/srv/./public/\"\n").unwrap();
    assert_eq!(config.auth.anonymous_home.to_string(), "/srv/public");
    let error = Config::parse("[auth]\nanonymous_home = \"pub\"\n").unwrap_err();
    assert!(error.to_string().contains("anonymous_home"), "{error}");
}

#[test]
fn partial_tables_keep_the_other_defaults() {
    let config = Config::parse(
            "[server]\nmax_sessions = 7\n[[server.listeners]]\nlisten = \"[::]:21\"\n\
             [[server.listeners]]\nlisten = \"127.0.0.1:2100\"\n\
             [passive]\nports = \"60000\"\n[storage]\nroot = \"/srv/ftp\"\n[auth]\nanonymous = true\n",
        )
        .unwrap();
    assert_eq!(config.server.max_sessions, 7);
    assert_eq!(config.server.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.server.listeners.len(), 2);
    assert_eq!(config.passive.ports.len(), 1);
    assert_eq!(
        config.storage,
        StorageConfig::Fs {
            root: "/srv/ftp".into(),
            fsync_uploads: true,
            chmod_mask: 0o755,
            partial_expiry: DEFAULT_PARTIAL_EXPIRY,
        }
    );
    assert!(config.auth.anonymous);
    assert_eq!(config.auth.anonymous_home.to_string(), "/pub");
    assert_eq!(
        FirewallSummary::of_config(&config).to_string(),
        "open TCP ports 21, 2100 (control) and 60000 (passive data)"
    );
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    for (text, field) in [
        ("[server]\nidle_timout = \"5m\"\n", "idle_timout"),
        ("[[server.listeners]]\nport = 21\n", "port"),
        ("[passive]\nrange = \"1-2\"\n", "range"),
        ("[storage]\nkind = \"fs\"\nbucket = \"b\"\n", "bucket"),
        ("[auth]\nfile = \"u.toml\"\n", "file"),
        ("[tls]\ncertificate = \"c.pem\"\n", "certificate"),
    ] {
        let message = error_of(text);
        assert!(
            message.contains(&format!("unknown field `{field}`")),
            "{text:?}: {message}"
        );
        assert!(message.contains("line "), "{message}");
    }
    assert!(error_of("[storage]\nkind = \"nfs\"\n").contains("unknown variant `nfs`"));
    assert!(error_of("[server]\nidle_timeout = \"5 parsecs\"\n").contains("line 2"));
}

#[test]
fn port_ranges_parse_display_and_refuse_nonsense() {
    let range: PortRange = "50000-50100".parse().unwrap();
    assert_eq!((range.ports(), range.len()), (50000..=50100, 101));
    assert_eq!(range.to_string(), "50000-50100");
    assert!(range.contains(50000) && range.contains(50100) && !range.contains(50101));
    assert_eq!(range.ports().count(), 101);
    assert_eq!(" 2000 - 2001 ".parse::<PortRange>().unwrap().len(), 2);
    let single: PortRange = "60000".parse().unwrap();
    assert_eq!((single.len(), single.to_string()), (1, "60000".to_owned()));
    assert_eq!(
        "65535-65535".parse::<PortRange>().unwrap().len(),
        1,
        "the top port"
    );

    assert_eq!(
        "50100-50000".parse::<PortRange>(),
        Err(PortRangeError::Reversed {
            first: 50100,
            last: 50000
        })
    );
    assert_eq!(
        "0-10".parse::<PortRange>(),
        Err(PortRangeError::BadPort("0".into()))
    );
    assert_eq!(
        "1-70000".parse::<PortRange>(),
        Err(PortRangeError::BadPort("70000".into()))
    );
    assert!(matches!(
        "".parse::<PortRange>(),
        Err(PortRangeError::Syntax(_))
    ));
    assert!(matches!(
        "5-".parse::<PortRange>(),
        Err(PortRangeError::Syntax(_))
    ));
    assert!(matches!(
        "a-b".parse::<PortRange>(),
        Err(PortRangeError::BadPort(_))
    ));

    let message = error_of("[passive]\nports = \"50100-50000\"\n");
    assert!(message.contains("line 2"), "{message}");
    assert!(
        message.contains("the first port 50100 is after the last port 50000"),
        "{message}"
    );
}

#[test]
fn chmod_mask_is_octal_and_never_has_special_bits() {
    let config = Config::parse("[storage]\nchmod_mask = 0o750\n").unwrap();
    let StorageConfig::Fs { chmod_mask, .. } = config.storage else {
        panic!("{:?}", config.storage)
    };
    assert_eq!(chmod_mask, 0o750);
    assert_eq!(config.validate(), []);
    let config = Config::parse("[storage]\nchmod_mask = 0o4755\n").unwrap();
    let problems = config.validate();
    assert_eq!(fields(&problems), ["storage.chmod_mask"]);
    assert!(problems[0].message.contains("setuid"), "{problems:?}");
}

#[test]
fn reports_every_problem_at_once() {
    let config = Config::parse(
        r#"
[server]
idle_timeout = "0s"
max_sessions = 0
threads = 0
greeting = "two\r\nlines"
[[server.listeners]]
listen = "0.0.0.0:50050"
tls = "explicit"
[[server.listeners]]
listen = "0.0.0.0:50050"
tls = "implicit"
[passive]
ports = "1000-50100"
advertise = "0.0.0.0"
[storage]
root = ""
"#,
    )
    .unwrap();
    let problems = config.validate();
    assert_eq!(
        fields(&problems),
        [
            "server.idle_timeout",
            "server.max_sessions",
            "server.threads",
            "server.greeting",
            "server.listeners[0].tls",
            "passive.ports",
            "server.listeners[1].tls",
            "server.listeners[1].listen",
            "passive.ports",
            "passive.ports",
            "passive.advertise",
            "storage.root",
        ]
    );
    assert_eq!(
        problems[4].to_string(),
        "server.listeners[0].tls: TLS needs a certificate: set tls.cert and tls.key (or try `serve --tls self-signed`)"
    );
    assert!(
        problems[9].message.contains("privileged"),
        "{}",
        problems[9]
    );

    let no_listener = Config {
        server: ServerConfig {
            listeners: Vec::new(),
            ..ServerConfig::default()
        },
        ..Config::default()
    };
    assert_eq!(fields(&no_listener.validate()), ["server.listeners"]);
}

#[test]
fn limits_take_rates_with_units() {
    let config = Config::parse(
        "[limits]\ndownload_rate = \"10MB/s\"\nupload_rate = 1048576\nmax_sessions_per_user = 3\n",
    )
    .unwrap();
    assert_eq!(
        config.limits,
        LimitsConfig {
            download_rate: Some(10_000_000),
            upload_rate: Some(1 << 20),
            max_sessions_per_user: Some(3),
        }
    );
    assert_eq!(Config::parse("").unwrap().limits, LimitsConfig::default());
    let error = Config::parse("[limits]\ndownload_rate = \"10Mb/s\"\n").unwrap_err();
    assert!(error.to_string().contains("not bits"), "{error}");
    assert!(Config::parse("[limits]\nupload_rate = 0\n").is_err());
    let problems = Config::parse("[limits]\nmax_sessions_per_user = 0\n")
        .unwrap()
        .validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn ports_of_a_config() {
    let config = Config::parse(
        "[[server.listeners]]\nlisten = \"0.0.0.0:2121\"\n\
         [[server.listeners]]\nlisten = \"[::]:2121\"\n\
         [passive]\nports = \"40000-40010\"\n",
    )
    .unwrap();
    assert_eq!(config.control_ports(), [2121]);
    assert_eq!(config.passive.ports.ports(), 40000..=40010);
    assert!(config.listens_on_ipv6());
}

mod tls {
    use std::time::Duration;

    use crate::*;

    #[test]
    fn tls_settings_parse_with_modern_defaults() {
        let config = Config::parse(
            r#"
[[server.listeners]]
listen = "127.0.0.1:2121"
tls = "explicit"
[[server.listeners]]
listen = "127.0.0.1:990"
tls = "implicit"
[tls]
cert = "cert.pem"
key = "key.pem"
require = "all"
reuse_exempt_users = ["pyftp"]
reuse_exempt_clients = ["192.0.2.0/24"]
client_ca = "ca.pem"
client_cert = "optional"
client_cert_user = "cn"
reload_check = "2s"
"#,
        )
        .unwrap();
        assert_eq!(config.validate(), []);
        assert_eq!(config.server.listeners[1].tls, TlsMode::Implicit);
        assert_eq!(config.tls.require, TlsRequire::All);
        assert_eq!(config.tls.require_data, TlsRequire::Accounts);
        assert_eq!(config.tls.min_version, TlsMinVersion::V1_2);
        assert!(config.tls.require_reuse);
        assert!(!config.tls.allow_ccc);
        assert_eq!(config.tls.client_cert, ClientCertConfig::Optional);
        assert_eq!(config.tls.reload_check, Duration::from_secs(2));
    }

    #[test]
    fn tls_problems_are_reported() {
        let config = Config::parse(
            r#"
[[server.listeners]]
listen = "127.0.0.1:990"
tls = "implicit"
[tls]
key = "key.pem"
client_cert_user = "cn"
min_version = "1.3"
"#,
        )
        .unwrap();
        let problems = config.validate();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "server.listeners[0].tls",
                "tls.cert",
                "tls.client_cert_user"
            ]
        );
        assert!(Config::parse("[tls]\nmin_version = \"1.1\"\n").is_err());
        assert!(Config::parse("[tls]\nrequire = \"some\"\n").is_err());
    }

    #[test]
    fn admin_listener_is_off_by_default_and_loopback_unless_allowed() {
        assert_eq!(Config::default().admin.listen, None);
        let config = Config::parse("[admin]\nlisten = \"127.0.0.1:9121\"\n").unwrap();
        assert_eq!(config.admin.listen, Some("127.0.0.1:9121".parse().unwrap()));
        assert!(config.validate().is_empty());
        assert!(
            Config::parse("[admin]\nlisten = \"[::1]:9121\"\nper_user_metrics = true\n")
                .unwrap()
                .validate()
                .is_empty()
        );
        let remote = Config::parse("[admin]\nlisten = \"0.0.0.0:9121\"\n").unwrap();
        let problems = remote.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "admin.listen");
        assert!(problems[0].message.contains("admin.allow_remote"));
        let allowed =
            Config::parse("[admin]\nlisten = \"0.0.0.0:9121\"\nallow_remote = true\n").unwrap();
        assert!(allowed.validate().is_empty());
        assert!(Config::parse("[admin]\nport = 9121\n").is_err());
    }
}

/// `From<&Config> for ServerOptions`, the command line's overrides and the firewall sentence.
mod convert {
    use std::time::Duration;

    use ferroftp_proto::session::{CertificateUser, TlsRequirement};
    use ferroftp_server::{
        ActiveSourcePort, AdvertiseTarget, CertificateSource, ClientCertMode, ListenerTls,
        PassiveLimits, ServerOptions, TlsVersion,
    };

    use super::NAT_SAMPLE;
    use crate::*;

    #[test]
    fn the_nat_settings_become_the_servers_options() {
        let options = ServerOptions::from(&Config::parse(NAT_SAMPLE).unwrap());
        assert_eq!(options.passive_ports, 50000..=50100);
        assert_eq!(options.advertise_ports, Some(60000..=60100));
        assert!(matches!(
            &options.advertise.global,
            Some(AdvertiseTarget::Name(name)) if name == "ftp.example.com"
        ));
        assert_eq!(options.advertise.refresh, Duration::from_secs(30));
        assert_eq!(options.advertise.tls, Some("203.0.113.8".parse().unwrap()));
        assert_eq!(options.advertise.by_client.len(), 1);
        assert_eq!(
            options.listeners[0].advertise,
            Some("198.51.100.1".parse().unwrap())
        );
        assert!(matches!(options.listeners[0].tls, ListenerTls::Off));
        assert!(matches!(
            options.active_source_port,
            ActiveSourcePort::ControlMinusOne
        ));
        assert!(options.session.active_nat_fallback);
        assert_eq!(options.passive_reuse_delay, Duration::from_secs(10));
        assert_eq!(options.proxy_protocol.trusted.len(), 2);
        assert_eq!(
            options.proxy_protocol.header_timeout,
            Duration::from_secs(2)
        );
        // Not set: the defaults for a range of 101 ports.
        let limits = options.passive_limits.unwrap();
        let defaults = PassiveLimits::for_range(101);
        assert_eq!(
            (limits.per_user, limits.per_client),
            (defaults.per_user, defaults.per_client)
        );
        assert!(options.tls.is_none());
    }

    #[test]
    fn the_tls_settings_become_the_servers_and_the_sessions() {
        let config = Config::parse(
            r#"
[[server.listeners]]
listen = "127.0.0.1:990"
tls = "implicit"
[tls]
cert = "cert.pem"
key = "key.pem"
require = "all"
require_data = "none"
min_version = "1.3"
client_ca = "ca.pem"
client_cert = "required"
client_cert_user = "cn"
reuse_exempt_clients = ["10.0.0.0/8"]
reload_check = "0s"
"#,
        )
        .unwrap();
        let options = ServerOptions::from(&config);
        assert!(matches!(options.listeners[0].tls, ListenerTls::Implicit));
        let tls = options.tls.unwrap();
        assert!(matches!(
            &tls.certificate,
            CertificateSource::Files { cert, key }
                if cert.ends_with("cert.pem") && key.ends_with("key.pem")
        ));
        assert!(matches!(tls.min_version, TlsVersion::Tls13));
        assert!(matches!(tls.client_cert, ClientCertMode::Required));
        assert_eq!(tls.reload_check, None, "0s: only on SIGHUP");
        let policy = &options.session.tls;
        assert!(matches!(policy.require_control, TlsRequirement::All));
        assert!(matches!(policy.require_data, TlsRequirement::None));
        assert!(matches!(
            policy.certificate_user,
            CertificateUser::CommonName
        ));
        assert_eq!(policy.reuse_exempt_clients.len(), 1);
    }

    #[test]
    fn overrides_replace_the_files_values() {
        let mut config = Config::parse(
            "[[server.listeners]]\nlisten = \"0.0.0.0:21\"\nadvertise = \"198.51.100.1\"\n\
             [tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        )
        .unwrap();
        let certificate = SelfSignedCertificate {
            cert_pem: "CERT".to_owned(),
            key_pem: "KEY".to_owned(),
            names: vec!["localhost".to_owned()],
            fingerprint: "AB".to_owned(),
        };
        let overrides = Overrides {
            listen: vec![
                "127.0.0.1:2121".parse().unwrap(),
                "[::1]:2121".parse().unwrap(),
            ],
            passive_ports: Some("40000-40009".parse().unwrap()),
            no_fsync_uploads: true,
            max_sessions: Some(7),
            self_signed: Some(certificate),
            ..Overrides::default()
        };
        overrides.apply_to(&mut config);
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        // The first listener's other settings are kept; self-signed TLS is explicit FTPS.
        assert_eq!(config.server.listeners.len(), 2);
        for listener in &config.server.listeners {
            assert_eq!(listener.advertise, Some("198.51.100.1".parse().unwrap()));
            assert_eq!(listener.tls, TlsMode::Explicit);
        }
        assert_eq!(config.passive.ports.len(), 10);
        assert_eq!(config.server.max_sessions, 7);
        let StorageConfig::Fs { fsync_uploads, .. } = &config.storage else {
            panic!("{:?}", config.storage)
        };
        assert!(!fsync_uploads);
        assert_eq!((&config.tls.cert, &config.tls.key), (&None, &None));
        let tls = ServerOptions::from(&config).tls.unwrap();
        assert!(matches!(
            &tls.certificate,
            CertificateSource::Pem { cert, key } if cert == "CERT" && key == "KEY"
        ));
    }

    #[test]
    fn a_started_server_says_how_many_transfers_its_range_allows() {
        let summary = FirewallSummary::of_bound([2121, 2121, 990], "50000-50100".parse().unwrap());
        assert_eq!(
            summary.to_string(),
            "open TCP ports 2121, 990 (control) and 50000-50100 (passive data: 101 transfers at once)"
        );
    }
}

#[test]
fn an_s3_bucket_is_a_storage_with_secrets_from_a_file() {
    let directory = tempfile::tempdir().unwrap();
    let secret = directory.path().join("s3-secret");
    std::fs::write(&secret, "0123456789abcdef-secret\n").unwrap();
    let text = format!(
        "[storage]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:3900\"\nregion = \"garage\"\n\
         bucket = \"ftp\"\nprefix = \"tenants/acme/\"\naccess_key_id = \"GKabc\"\n\
         secret_access_key_file = \"{}\"\npart_size = \"16MiB\"\nparts_in_flight = 2\n\
         partial_expiry = \"2h\"\n",
        secret.display()
    );
    let config = Config::parse(&text).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let StorageConfig::Object(object) = &config.storage else {
        panic!("{:?}", config.storage)
    };
    assert_eq!(object.part_size, 16 * 1024 * 1024);
    assert_eq!(object.partial_expiry, Duration::from_secs(7200));
    let settings = object.settings().unwrap();
    assert_eq!(settings.prefix, "tenants/acme/");
    assert_eq!(settings.parts_in_flight, 2);
    let ferroftp_storage_object::ServiceSettings::S3 {
        secret_access_key,
        region,
        ..
    } = &settings.service
    else {
        panic!("{:?}", settings.service)
    };
    assert_eq!(secret_access_key, "0123456789abcdef-secret");
    assert_eq!(region, "garage");
    assert_eq!(
        config.storage.describe(),
        "s3 bucket ftp prefix tenants/acme/ at http://127.0.0.1:3900"
    );
    // Debug output never shows a secret written in the file.
    let inline = Config::parse(
        "[storage]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"GKabc\"\n\
         secret_access_key = \"very-secret-value\"\n",
    )
    .unwrap();
    assert!(!format!("{inline:?}").contains("very-secret-value"));
}

#[test]
fn object_storage_problems_are_reported_by_field() {
    let config = Config::parse(
        "[storage]\nkind = \"s3\"\naccess_key_id = \"GKabc\"\n\
         secret_access_key_file = \"/nonexistent/secret\"\npart_size = \"1MiB\"\n",
    )
    .unwrap();
    let problems = config.validate();
    let fields = fields(&problems);
    for field in [
        "storage.part_size",
        "storage.secret_access_key_file",
        "storage.bucket",
    ] {
        assert!(fields.contains(&field), "{field} in {problems:?}");
    }
    // Settings of the other kind are refused by name, both ways.
    assert!(error_of("[storage]\nkind = \"s3\"\nroot = \"/srv\"\n").contains("`root`"));
    assert!(error_of("[storage]\nbucket = \"b\"\n").contains("`bucket`"));
    assert!(
        error_of("[storage]\nkind = \"s3\"\naccount_name = \"a\"\n").contains("`account_name`")
    );
}
