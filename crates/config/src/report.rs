//! Loading a config file the way `check-config`, `serve` and a reload need it: every problem
//! at once, like `nginx -t`.
//!
//! 1. Parse-level problems (an unknown key, a value of the wrong type, a bad port range):
//!    serde stops at the first, so each one is recorded with its key and line, the key is
//!    taken out of the document, and the rest is parsed again (bounded), until it parses.
//! 2. The rules that span fields ([`Config::validate`]).
//! 3. What the config refers to: the TLS certificate and key (loaded as the server would),
//!    the client CA, the users file, the account to switch to, and `passive.advertise`
//!    names (resolved).
//!
//! A TOML syntax error stops at 1: nothing after it can be read reliably.

use std::ops::Range;
use std::path::Path;

use ferroftp_auth_file::UsersFile;
use toml_edit::{ImDocument, Item, Table};

use crate::{AdvertiseAddress, AuthBackendConfig, Config, ConfigProblem, config_directory};

/// Most parse-level problems reported before giving up (each costs one parse).
const MAX_PARSE_PROBLEMS: usize = 64;

/// The config at `path` with every problem found in it; `None` when nothing usable could be
/// read (an unreadable file, a syntax error).
pub struct LoadedConfig {
    /// The config, with each key that had a parse-level problem left at its default.
    pub config: Option<Config>,
    /// Every problem, parse-level first.
    pub problems: Vec<ConfigProblem>,
}

/// Reads `path` and checks it completely (steps 1 to 3). Relative paths are resolved
/// against the file's directory, then `adjust` runs (the command line's overrides) before
/// the checks.
pub fn load(path: &Path, adjust: impl FnOnce(&mut Config)) -> LoadedConfig {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            return LoadedConfig {
                config: None,
                problems: vec![ConfigProblem::new(
                    "file",
                    format!("cannot read it: {error}"),
                )],
            };
        }
    };
    let (config, mut problems) = parse_reporting_all(&text);
    let config = config.map(|mut config| {
        config.resolve_relative_to(&config_directory(path));
        adjust(&mut config);
        problems.extend(check(&config));
        config
    });
    LoadedConfig { config, problems }
}

/// Checks a config that did not come from a file (the defaults and the command line).
pub fn check(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = config.validate();
    problems.extend(check_referenced(config));
    problems
}

/// Step 1: parses `text`, recovering from each parse-level problem.
pub fn parse_reporting_all(text: &str) -> (Option<Config>, Vec<ConfigProblem>) {
    let original = match ImDocument::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let line = error.span().map(|span| line_of(text, span.start));
            let message = error.message().trim_end().to_owned();
            let problem = match line {
                Some(line) => ConfigProblem::new(format!("line {line}"), message),
                None => ConfigProblem::new("file", message),
            };
            return (None, vec![problem]);
        }
    };
    // Each problem with its line, to report them in the file's order.
    let mut found: Vec<(usize, ConfigProblem)> = Vec::new();
    let in_file_order = |mut found: Vec<(usize, ConfigProblem)>| {
        found.sort_by_key(|(line, _)| *line);
        found.into_iter().map(|(_, problem)| problem).collect()
    };
    let mut current = text.to_owned();
    for _ in 0..MAX_PARSE_PROBLEMS {
        let error = match toml::from_str::<Config>(&current) {
            Ok(config) => return (Some(config), in_file_order(found)),
            Err(error) => error,
        };
        let message = error.message().trim_end().to_owned();
        let located = error.span().and_then(|span| {
            let document = ImDocument::parse(current.as_str()).ok()?;
            key_path_at(document.as_table(), &span)
        });
        let Some(path) = located else {
            // Nowhere to cut: report it and stop.
            found.push((usize::MAX, ConfigProblem::new("file", message)));
            return (None, in_file_order(found));
        };
        let field = dotted(&path);
        let line = span_of(original.as_table(), &path).map(|span| line_of(text, span.start));
        let problem = ConfigProblem::new(
            field,
            match line {
                Some(line) => format!("{message} (line {line})"),
                None => message,
            },
        );
        found.push((line.unwrap_or(usize::MAX), problem));
        match without(&current, &path) {
            Some(rest) => current = rest,
            None => return (None, in_file_order(found)),
        }
    }
    found.push((
        usize::MAX,
        ConfigProblem::new(
            "file",
            format!("more than {MAX_PARSE_PROBLEMS} problems; fix these first"),
        ),
    ));
    (None, in_file_order(found))
}

/// One step of a key path: a table key, or an index into an array of tables.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn dotted(path: &[Segment]) -> String {
    let mut text = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Segment::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

fn contains(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref().is_some_and(|span| span.contains(&offset))
}

/// The path of the innermost key whose key or value holds `span.start`.
fn key_path_at(table: &Table, span: &Range<usize>) -> Option<Vec<Segment>> {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let here = vec![Segment::Key(name.to_owned())];
        let inner = match item {
            Item::Table(child) => key_path_at(child, span),
            Item::ArrayOfTables(array) => array.iter().enumerate().find_map(|(index, child)| {
                let mut path = vec![Segment::Index(index)];
                if let Some(rest) = key_path_at(child, span) {
                    path.extend(rest);
                    Some(path)
                } else if contains(&child.span(), span.start) {
                    Some(path)
                } else {
                    None
                }
            }),
            _ => None,
        };
        if let Some(rest) = inner {
            return Some(here.into_iter().chain(rest).collect());
        }
        if contains(&key.span(), span.start) || contains(&item.span(), span.start) {
            return Some(here);
        }
    }
    None
}

/// Where the key at `path` is written.
fn span_of(table: &Table, path: &[Segment]) -> Option<Range<usize>> {
    let (Segment::Key(name), rest) = path.split_first()? else {
        return None;
    };
    let (key, item) = table.get_key_value(name)?;
    match (rest.split_first(), item) {
        (None, _) => key.span().or_else(|| item.span()),
        (Some((Segment::Key(_), _)), Item::Table(child)) => span_of(child, rest),
        (Some((Segment::Index(index), deeper)), Item::ArrayOfTables(array)) => {
            let child = array.get(*index)?;
            if deeper.is_empty() {
                child.span()
            } else {
                span_of(child, deeper)
            }
        }
        _ => None,
    }
}

/// `text` without the key at `path`; `None` when it cannot be found.
fn without(text: &str, path: &[Segment]) -> Option<String> {
    let mut document: toml_edit::DocumentMut = text.parse().ok()?;
    remove_at(document.as_table_mut(), path)?;
    Some(document.to_string())
}

fn remove_at(table: &mut Table, path: &[Segment]) -> Option<()> {
    match path {
        [Segment::Key(key)] => table.remove(key).map(drop),
        [Segment::Key(key), Segment::Index(index)] => {
            let array = table.get_mut(key)?.as_array_of_tables_mut()?;
            if *index >= array.len() {
                return None;
            }
            array.remove(*index);
            Some(())
        }
        [Segment::Key(key), Segment::Index(index), rest @ ..] => {
            let array = table.get_mut(key)?.as_array_of_tables_mut()?;
            remove_at(array.get_mut(*index)?, rest)
        }
        [Segment::Key(key), rest @ ..] => remove_at(table.get_mut(key)?.as_table_mut()?, rest),
        _ => None,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

/// Step 3: the files, accounts and names the config refers to.
fn check_referenced(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if let (Some(_), Some(_)) = (&config.tls.cert, &config.tls.key)
        && let Err(error) = config.check_tls()
    {
        // With its causes (the file, the PEM problem), as anyhow prints a chain.
        let error = anyhow::Error::from(error);
        problems.push(ConfigProblem::new("tls.cert", format!("{error:#}")));
    }
    let AuthBackendConfig::File { path } = &config.auth.backend;
    // A missing users file is created at start with one generated account.
    if path.exists()
        && let Err(error) = UsersFile::load(path)
    {
        problems.push(ConfigProblem::new(
            "auth.path",
            format!("{}: {error}", path.display()),
        ));
    }
    if let Some(user) = &config.server.user
        && let Err(error) = crate::Account::look_up(user, config.server.group.as_deref())
    {
        problems.push(ConfigProblem::new("server.user", format!("{error:#}")));
    }
    if let Some(AdvertiseAddress::Name(name)) = &config.passive.advertise {
        use std::net::ToSocketAddrs;
        match (name.as_str(), 0).to_socket_addrs() {
            Ok(addresses) if addresses.len() > 0 => {}
            Ok(_) => problems.push(ConfigProblem::new(
                "passive.advertise",
                format!("{name} resolves to no address"),
            )),
            Err(error) => problems.push(ConfigProblem::new(
                "passive.advertise",
                format!("{name} does not resolve: {error}"),
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<String> {
        let (_, problems) = parse_reporting_all(text);
        problems
            .iter()
            .map(|problem| format!("{}: {}", problem.field, problem.message))
            .collect()
    }

    #[test]
    fn every_parse_level_problem_is_reported_with_its_key_and_line() {
        let text = "\
[server]
max_sessions = \"many\"
colour = \"blue\"

[passive]
ports = \"60000-50000\"
advertise = \"203.0.113.7\"

[[server.listeners]]
listen = \"127.0.0.1:2121\"
tls = \"sometimes\"
";
        let found = fields(text);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("server.max_sessions: "), "{found:#?}");
        assert!(found[0].ends_with("(line 2)"), "{found:#?}");
        assert!(found[1].starts_with("server.colour: "), "{found:#?}");
        assert!(found[1].contains("unknown field"), "{found:#?}");
        assert!(found[2].starts_with("passive.ports: "), "{found:#?}");
        assert!(found[2].contains("after the last port"), "{found:#?}");
        assert!(found[2].ends_with("(line 6)"), "{found:#?}");
        // In the file's order, whatever order serde found them in.
        assert!(
            found[3].starts_with("server.listeners[0].tls: "),
            "{found:#?}"
        );
        assert!(found[3].ends_with("(line 11)"), "{found:#?}");
    }

    #[test]
    fn the_rest_of_a_file_with_problems_is_still_read() {
        let (config, problems) = parse_reporting_all(
            "[passive]\nports = \"x\"\nadvertise = \"203.0.113.7\"\n[data]\nidle_timeout = \"9s\"\n",
        );
        assert_eq!(problems.len(), 1);
        let config = config.unwrap();
        assert_eq!(
            config.passive.advertise,
            Some(AdvertiseAddress::Ip("203.0.113.7".parse().unwrap()))
        );
        assert_eq!(config.data.idle_timeout, std::time::Duration::from_secs(9));
    }

    #[test]
    fn a_syntax_error_is_reported_with_its_line() {
        let (config, problems) = parse_reporting_all("[server]\nmax_sessions = = 3\n");
        assert!(config.is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "line 2");
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("ferroftp.toml");
        std::fs::write(
            &path,
            "[storage]\nroot = \"files\"\n[auth]\npath = \"/abs/users.toml\"\n",
        )
        .unwrap();
        let loaded = load(&path, |_| {});
        let config = loaded.config.unwrap();
        let crate::StorageConfig::Fs { root, .. } = &config.storage else {
            panic!("{:?}", config.storage)
        };
        assert_eq!(root, &directory.path().join("files"));
        let AuthBackendConfig::File { path } = &config.auth.backend;
        assert_eq!(path, Path::new("/abs/users.toml"));
    }

    #[test]
    fn referenced_files_and_names_are_checked() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("ferroftp.toml");
        std::fs::write(directory.path().join("users.toml"), "not [ valid").unwrap();
        std::fs::write(
            &path,
            "[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n\
             [passive]\nadvertise = \"no-such-host.invalid\"\n",
        )
        .unwrap();
        let loaded = load(&path, |_| {});
        let fields: Vec<&str> = loaded.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["tls.cert", "auth.path", "passive.advertise"],
            "{:#?}",
            loaded.problems
        );
    }
}
