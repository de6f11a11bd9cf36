//! Virtual path resolution: whatever a client sends, from whatever working directory, the
//! result is absolute, normalised (no `.`, `..` or empty segments) and never above `/`; a
//! path resolved inside a home stays inside it once the home is prefixed.
#![no_main]

use ferroftp_proto::VirtualPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\u{0}').unwrap_or((text, ""));
    let root = VirtualPath::root();
    let Ok(cwd) = root.resolve(first) else {
        return;
    };
    for path in [cwd.clone(), cwd.resolve(second).unwrap_or_else(|_| cwd.clone())] {
        let shown = path.as_str();
        assert!(shown.starts_with('/'), "{shown:?} is not absolute");
        for segment in path.segments() {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "{shown:?} is not normalised"
            );
        }
        let home = root.resolve("/home/alice").expect("a valid home");
        let inside = home.join(&path);
        assert!(
            inside.strip_base(&home).is_some(),
            "{shown:?} left the home /home/alice as {:?}",
            inside.as_str()
        );
    }
});
