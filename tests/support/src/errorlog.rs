//! Reading nginx's error.log: the lines at serious levels (what fails a test when nginx
//! stops), the last lines (what a failure shows).

use std::fs;
use std::path::Path;

/// The levels at which a line means something went wrong in nginx itself.
pub const SERIOUS_LEVELS: [&str; 3] = ["[alert]", "[crit]", "[emerg]"];

/// The file at `path` as text (invalid UTF-8 replaced); empty if it cannot be read.
pub fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The lines of `log` at one of `levels` (`"[error]"`, …), in order.
pub fn lines_at(log: &str, levels: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| levels.iter().any(|lvl| l.contains(lvl)))
        .map(str::to_string)
        .collect()
}

/// The lines of an error.log at `[alert]`, `[crit]` or `[emerg]` that hold none of `tolerated`.
pub fn serious_lines(log: &str, tolerated: &[String]) -> Vec<String> {
    lines_at(log, &SERIOUS_LEVELS)
        .into_iter()
        .filter(|l| !tolerated.iter().any(|t| l.contains(t.as_str())))
        .collect()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serious_lines_skip_lower_levels_and_tolerated_ones() {
        let log = "a [notice] 1\nb [alert] 2\nc [error] 3\nd [crit] worker exited on signal 9\n\
                   e [emerg] 5";
        assert_eq!(
            serious_lines(log, &["signal 9".to_string()]),
            ["b [alert] 2", "e [emerg] 5"]
        );
        assert_eq!(
            lines_at(log, &["[error]", "[notice]"]),
            ["a [notice] 1", "c [error] 3"]
        );
        assert_eq!(
            tail(log, 2),
            "d [crit] worker exited on signal 9\ne [emerg] 5"
        );
        assert_eq!(tail("", 3), "");
    }
}
