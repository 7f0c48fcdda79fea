//! The listening line: once a server's listeners are bound, it prints one JSON object on
//! stdout, e.g. `{"listening":{"api":"127.0.0.1:7070"},"pid":4242}`. With `:0` in a
//! listen flag this is the only way to learn the port, without racing for one.

use std::io::Write as _;
use std::net::SocketAddr;

/// Print the listening line (flushed at once: stdout may be a pipe).
pub fn announce(listeners: &[(&str, SocketAddr)], extra: &[(&str, serde_json::Value)]) {
    let mut l = serde_json::Map::new();
    for (name, addr) in listeners {
        l.insert((*name).to_string(), addr.to_string().into());
    }
    let mut line = serde_json::Map::new();
    line.insert("listening".into(), l.into());
    for (k, v) in extra {
        line.insert((*k).to_string(), v.clone());
    }
    line.insert("pid".into(), std::process::id().into());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::Value::Object(line));
    let _ = out.flush();
}
