//! The listening line: once a server's listeners are bound, it prints one JSON object on
//! stdout, e.g. `{"listening":{"api":"127.0.0.1:7070"},"pid":4242}`. With `:0` in a
//! listen flag this is the only way to learn the port, without racing for one.

use std::io::Write as _;
use std::net::SocketAddr;

/// Print the listening line (flushed at once: stdout may be a pipe).
pub fn announce(listeners: &[(&str, SocketAddr)], extra: &[(&str, serde_json::Value)]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(listeners, extra));
    let _ = out.flush();
}

/// The line itself, keys in the order given: `listening` first (readers may match on the
/// line's start), then `extra`, then `pid`.
fn line(listeners: &[(&str, SocketAddr)], extra: &[(&str, serde_json::Value)]) -> String {
    let l: Vec<String> = listeners
        .iter()
        .map(|(name, addr)| {
            format!(
                "{}:{}",
                serde_json::Value::from(*name),
                serde_json::Value::from(addr.to_string())
            )
        })
        .collect();
    let mut s = format!("{{\"listening\":{{{}}}", l.join(","));
    for (k, v) in extra {
        s.push_str(&format!(",{}:{v}", serde_json::Value::from(*k)));
    }
    s.push_str(&format!(",\"pid\":{}}}", std::process::id()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_json_with_listening_first() {
        let addr: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let l = line(&[("api", addr)], &[("instance", "a \"b\"".into())]);
        assert!(
            l.starts_with("{\"listening\":{\"api\":\"127.0.0.1:7070\"}"),
            "{l}"
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["instance"], "a \"b\"");
        assert_eq!(v["pid"], std::process::id());
    }
}
