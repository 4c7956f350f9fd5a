//! `ProxyJump` values.

/// One hop of a `ProxyJump` list: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Parses a `ProxyJump` value into hops (first hop first). `ssh://` URIs are accepted too.
pub fn parse_proxy_jump(v: &str) -> Result<Vec<JumpHost>, String> {
    v.split(',')
        .map(|hop| {
            let hop = hop.trim();
            let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
            if hop.is_empty() {
                return Err(format!("empty hop in ProxyJump `{v}`"));
            }
            let (user, hostport) = match hop.rsplit_once('@') {
                Some((u, h)) => (Some(u.to_owned()), h),
                None => (None, hop),
            };
            let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
                let (h, after) = r
                    .split_once(']')
                    .ok_or_else(|| format!("bad ProxyJump hop `{hop}`"))?;
                let port = match after.strip_prefix(':') {
                    Some(p) => Some(p.parse().map_err(|_| format!("bad port in `{hop}`"))?),
                    None => None,
                };
                (h.to_owned(), port)
            } else {
                match hostport.split_once(':') {
                    Some((h, p)) => (
                        h.to_owned(),
                        Some(p.parse().map_err(|_| format!("bad port in `{hop}`"))?),
                    ),
                    None => (hostport.to_owned(), None),
                }
            };
            if host.is_empty() {
                return Err(format!("bad ProxyJump hop `{hop}`"));
            }
            Ok(JumpHost { user, host, port })
        })
        .collect()
}
