//! Directory listing formats: LIST (`ls -l` style, the de-facto format clients parse), NLST
//! (names only, RFC 959 §4.1.3) and the machine-readable MLSD/MLST facts (RFC 3659 §7).
//! Each formatter appends to a caller-owned buffer so a listing of many entries reuses one
//! allocation.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use crate::metadata::{DirEntry, FileKind, FileMeta};
use crate::time::{CivilTime, write_time_val};

/// Which listing a transfer produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    /// LIST: one `ls -l` line per entry.
    Long,
    /// NLST: one name per line.
    NamesOnly,
    /// MLSD: one facts line per entry.
    Machine,
}

/// The MLST facts this server can report (RFC 3659 §7.5), and which a client selected with
/// `OPTS MLST` (§7.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlstFacts {
    /// `type=file|dir|OS.unix=symlink`.
    pub kind: bool,
    /// `size=`.
    pub size: bool,
    /// `modify=`.
    pub modify: bool,
    /// `perm=`.
    pub perm: bool,
    /// `UNIX.mode=`.
    pub unix_mode: bool,
}

impl Default for MlstFacts {
    fn default() -> Self {
        Self {
            kind: true,
            size: true,
            modify: true,
            perm: true,
            unix_mode: true,
        }
    }
}

impl MlstFacts {
    const NAMES: [&'static str; 5] = ["type", "size", "modify", "perm", "UNIX.mode"];

    fn flags(&self) -> [bool; 5] {
        [self.kind, self.size, self.modify, self.perm, self.unix_mode]
    }

    /// The FEAT line: `MLST type*;size*;…` with `*` on the selected facts.
    pub fn feature_line(&self) -> String {
        let mut line = String::from("MLST ");
        for (name, selected) in Self::NAMES.iter().zip(self.flags()) {
            line.push_str(name);
            if selected {
                line.push('*');
            }
            line.push(';');
        }
        line
    }

    /// `OPTS MLST fact;fact;`: selects the known facts named (case-insensitive), drops the
    /// rest, and returns the selection as the reply lists it.
    pub fn select(list: &str) -> (Self, String) {
        let wanted: Vec<String> = list
            .split(';')
            .filter(|f| !f.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        let is = |name: &str| wanted.iter().any(|w| w == &name.to_ascii_lowercase());
        let facts = Self {
            kind: is("type"),
            size: is("size"),
            modify: is("modify"),
            perm: is("perm"),
            unix_mode: is("UNIX.mode"),
        };
        let mut echoed = String::new();
        for (name, selected) in Self::NAMES.iter().zip(facts.flags()) {
            if selected {
                echoed.push_str(name);
                echoed.push(';');
            }
        }
        (facts, echoed)
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ls -l` shows the time of day for files modified within about six months, the year
/// otherwise.
const RECENT: Duration = Duration::from_secs(182 * 24 * 3600);

fn mode_string(meta: &FileMeta) -> [u8; 10] {
    let mut text = *b"----------";
    text[0] = match meta.kind {
        FileKind::Directory => b'd',
        FileKind::Symlink => b'l',
        FileKind::File => b'-',
    };
    for (index, symbol) in b"rwxrwxrwx".iter().enumerate() {
        if meta.mode & (0o400 >> index) != 0 {
            text[index + 1] = *symbol;
        }
    }
    text
}

/// Whether `name` can be written as a listing line. A name holding CR or LF would end its
/// line and start forged ones (one crafted name showing as several entries): such names
/// are refused when created (553) and never written in a listing (the storage logs what it
/// skipped). RFC 959 §4.1.3 and RFC 3659 §7.2 list one entry per CRLF-terminated line.
pub fn is_listable_name(name: &str) -> bool {
    !name.bytes().any(|byte| byte == b'\r' || byte == b'\n')
}

/// Appends one LIST line (with CRLF). `now` decides between time-of-day and year. Nothing
/// for a name that is not [listable](is_listable_name).
pub fn format_long(entry: &DirEntry, now: SystemTime, out: &mut Vec<u8>) {
    if !is_listable_name(&entry.name) {
        return;
    }
    let meta = &entry.meta;
    out.extend_from_slice(&mode_string(meta));
    let modified = meta.modified.unwrap_or(SystemTime::UNIX_EPOCH);
    let civil = CivilTime::from_system_time(modified);
    let is_recent = match now.duration_since(modified) {
        Ok(age) => age < RECENT,
        Err(ahead) => ahead.duration() < Duration::from_secs(3600),
    };
    // Writing into a Vec<u8> cannot fail; formatting straight into `out` keeps a listing
    // of any length at one growing allocation.
    let _ = write!(
        out,
        " 1 ftp ftp {:>12} {} {:>2} ",
        meta.size,
        MONTHS[(civil.month - 1) as usize],
        civil.day
    );
    if is_recent {
        let _ = write!(out, "{:02}:{:02} ", civil.hour, civil.minute);
    } else {
        let _ = write!(out, "{:>5} ", civil.year);
    }
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one NLST line (with CRLF); nothing for a name that is not
/// [listable](is_listable_name).
pub fn format_name(entry: &DirEntry, out: &mut Vec<u8>) {
    if !is_listable_name(&entry.name) {
        return;
    }
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The MLSx facts of one entry followed by a space (RFC 3659 §7.2: `facts SP pathname`).
/// `writable` decides the `perm` fact (a read-only user sees only read permissions).
pub fn format_facts(meta: &FileMeta, facts: MlstFacts, writable: bool, out: &mut String) {
    let mut text = Vec::with_capacity(96);
    write_facts(meta, facts, writable, &mut text);
    out.push_str(std::str::from_utf8(&text).expect("facts are ASCII"));
}

/// [`format_facts`] appending bytes, for MLSD lines.
fn write_facts(meta: &FileMeta, facts: MlstFacts, writable: bool, out: &mut Vec<u8>) {
    if facts.kind {
        out.extend_from_slice(match meta.kind {
            FileKind::File => b"type=file;",
            FileKind::Directory => b"type=dir;",
            FileKind::Symlink => b"type=OS.unix=symlink;",
        });
    }
    if facts.size {
        let _ = write!(out, "size={};", meta.size);
    }
    if facts.modify
        && let Some(modified) = meta.modified
    {
        out.extend_from_slice(b"modify=");
        write_time_val(modified, out);
        out.push(b';');
    }
    if facts.perm {
        // RFC 3659 §7.5.5: r/w/a/d/f for files, e/l/c/m/p/d/f for directories.
        let perm: &[u8] = match (meta.kind, writable) {
            (FileKind::Directory, true) => b"elcmpdf",
            (FileKind::Directory, false) => b"el",
            (_, true) => b"radfw",
            (_, false) => b"r",
        };
        out.extend_from_slice(b"perm=");
        out.extend_from_slice(perm);
        out.push(b';');
    }
    if facts.unix_mode {
        let _ = write!(out, "UNIX.mode=0{:o};", meta.mode & 0o7777);
    }
    out.push(b' ');
}

/// Appends one MLSD line (with CRLF); nothing for a name that is not
/// [listable](is_listable_name).
pub fn format_machine(entry: &DirEntry, facts: MlstFacts, writable: bool, out: &mut Vec<u8>) {
    if !is_listable_name(&entry.name) {
        return;
    }
    write_facts(&entry.meta, facts, writable, out);
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one line in `format`.
pub fn format_entry(
    format: ListFormat,
    entry: &DirEntry,
    now: SystemTime,
    facts: MlstFacts,
    writable: bool,
    out: &mut Vec<u8>,
) {
    match format {
        ListFormat::Long => format_long(entry, now, out),
        ListFormat::NamesOnly => format_name(entry, out),
        ListFormat::Machine => format_machine(entry, facts, writable, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_line_breaks_are_never_written() {
        let entry = |name: &str| DirEntry {
            name: name.to_owned(),
            meta: FileMeta {
                kind: crate::metadata::FileKind::File,
                size: 1,
                modified: None,
                mode: 0o644,
            },
        };
        let now = SystemTime::UNIX_EPOCH;
        for name in [
            "a\r\n-rw-r--r-- 1 ftp ftp 1 Jan  1  1970 fake",
            "a\rb",
            "a\nb",
        ] {
            for format in [ListFormat::Long, ListFormat::NamesOnly, ListFormat::Machine] {
                let mut out = Vec::new();
                format_entry(
                    format,
                    &entry(name),
                    now,
                    MlstFacts::default(),
                    true,
                    &mut out,
                );
                assert!(out.is_empty(), "{format:?} {name:?}: {out:?}");
            }
        }
        let mut out = Vec::new();
        format_name(&entry("plain"), &mut out);
        assert_eq!(out, b"plain\r\n");
    }
    use std::time::UNIX_EPOCH;

    fn entry(name: &str, kind: FileKind, size: u64, at: u64) -> DirEntry {
        DirEntry {
            name: name.to_owned(),
            meta: FileMeta {
                kind,
                size,
                modified: Some(UNIX_EPOCH + Duration::from_secs(at)),
                mode: if kind == FileKind::Directory {
                    0o755
                } else {
                    0o644
                },
            },
        }
    }

    const NOW: u64 = 1_764_084_918; // 2025-11-25 15:35:18 UTC

    #[test]
    fn long_format_recent_and_old() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let mut out = Vec::new();
        format_long(&entry("a.txt", FileKind::File, 42, NOW - 60), now, &mut out);
        format_long(
            &entry("old", FileKind::Directory, 4096, 1_000_000_000),
            now,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-rw-r--r-- 1 ftp ftp           42 Nov 25 15:34 a.txt\r\n\
             drwxr-xr-x 1 ftp ftp         4096 Sep  9  2001 old\r\n"
        );
    }

    #[test]
    fn machine_format_facts() {
        let mut out = Vec::new();
        let file = entry("a b.txt", FileKind::File, 7, NOW);
        format_machine(&file, MlstFacts::default(), true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "type=file;size=7;modify=20251125153518;perm=radfw;UNIX.mode=0644; a b.txt\r\n"
        );
    }

    #[test]
    fn opts_mlst_selects_known_facts() {
        let (facts, echoed) = MlstFacts::select("Type;SIZE;bogus;");
        assert_eq!(echoed, "type;size;");
        assert_eq!(
            facts.feature_line(),
            "MLST type*;size*;modify;perm;UNIX.mode;"
        );
        let mut out = Vec::new();
        format_machine(
            &entry("d", FileKind::Directory, 0, NOW),
            facts,
            false,
            &mut out,
        );
        assert_eq!(out, b"type=dir;size=0; d\r\n");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_entry() -> impl Strategy<Value = DirEntry> {
            (
                "[^\r\n/]{1,64}",
                prop_oneof![
                    Just(FileKind::File),
                    Just(FileKind::Directory),
                    Just(FileKind::Symlink)
                ],
                any::<u64>(),
                // Seconds from the epoch, before 1970 included (MFMT can set those).
                proptest::option::of(-(400i64 * 365 * 86_400)..(400 * 365 * 86_400)),
                0u32..0o10000,
            )
                .prop_map(|(name, kind, size, at, mode)| DirEntry {
                    name,
                    meta: FileMeta {
                        kind,
                        size,
                        modified: at.map(|at| match u64::try_from(at) {
                            Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
                            Err(_) => UNIX_EPOCH - Duration::from_secs(at.unsigned_abs()),
                        }),
                        mode,
                    },
                })
        }

        proptest! {
            /// One entry is one line in every listing format: CRLF-terminated, no other CR
            /// or LF, ending with the entry's name (LIST, NLST, MLSD).
            #[test]
            fn every_format_gives_one_line_per_entry_ending_with_its_name(entry in any_entry()) {
                let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
                let mut long = Vec::new();
                format_long(&entry, now, &mut long);
                let mut name = Vec::new();
                format_name(&entry, &mut name);
                let mut machine = Vec::new();
                format_machine(&entry, MlstFacts::default(), true, &mut machine);
                for line in [long, name, machine] {
                    let text = String::from_utf8(line).unwrap();
                    let body = text.strip_suffix("\r\n").expect("CRLF-terminated");
                    prop_assert!(!body.contains('\r') && !body.contains('\n'), "{:?}", text);
                    prop_assert!(body.ends_with(&entry.name), "{:?}", text);
                }
            }
        }
    }
}
