//! Wire primitives shared by the serve protocol, NAR and export formats: little-endian u64s and
//! length-prefixed, zero-padded byte strings. Readers enforce [`Limits`] on everything a remote
//! sends, so a garbage length gives an error instead of an allocation bomb.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Limits on what a remote may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Max bytes in one string (store paths, hashes, signatures). Default 64 KiB.
    pub max_string: u64,
    /// Max entries in one set or list. Default 1 Mi.
    pub max_set: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string: 64 * 1024,
            max_set: 1024 * 1024,
        }
    }
}

/// Low-level read failure, turned into [`crate::Error`] with context by the caller.
#[derive(Debug)]
pub(crate) enum WireError {
    Io(std::io::Error),
    Eof,
    TooLong {
        what: &'static str,
        len: u64,
        limit: u64,
    },
    Invalid(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Eof
        } else {
            WireError::Io(e)
        }
    }
}

impl WireError {
    pub(crate) fn into_error(self, host: &str, during: impl Into<String>) -> crate::Error {
        let host = host.to_string();
        let during = during.into();
        match self {
            WireError::Io(source) => crate::Error::Io {
                host,
                during,
                source,
            },
            WireError::Eof => crate::Error::UnexpectedEof { host, during },
            WireError::TooLong { what, len, limit } => crate::Error::TooLong {
                host,
                what,
                len,
                limit,
            },
            WireError::Invalid(detail) => crate::Error::Protocol {
                host,
                during,
                detail,
            },
        }
    }
}

pub(crate) fn padding(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

pub(crate) fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u64(buf, b.len() as u64);
    buf.extend_from_slice(b);
    buf.extend(std::iter::repeat_n(0u8, padding(b.len() as u64)));
}

pub(crate) fn put_strings<'a>(buf: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a str>) {
    put_u64(buf, items.len() as u64);
    for s in items {
        put_bytes(buf, s.as_bytes());
    }
}

pub(crate) async fn read_u64<R: AsyncRead + Unpin>(r: &mut R) -> Result<u64, WireError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).await?;
    Ok(u64::from_le_bytes(b))
}

pub(crate) async fn read_bytes<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
    what: &'static str,
) -> Result<Vec<u8>, WireError> {
    let len = read_u64(r).await?;
    if len > limits.max_string {
        return Err(WireError::TooLong {
            what,
            len,
            limit: limits.max_string,
        });
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v).await?;
    let mut pad = [0u8; 8];
    let p = padding(len);
    r.read_exact(&mut pad[..p]).await?;
    if pad[..p].iter().any(|&b| b != 0) {
        return Err(WireError::Invalid(format!("non-zero padding after {what}")));
    }
    Ok(v)
}

pub(crate) async fn read_string<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
    what: &'static str,
) -> Result<String, WireError> {
    let b = read_bytes(r, limits, what).await?;
    String::from_utf8(b).map_err(|_| WireError::Invalid(format!("{what} is not UTF-8")))
}

pub(crate) async fn read_count<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
    what: &'static str,
) -> Result<u64, WireError> {
    let n = read_u64(r).await?;
    if n > limits.max_set {
        return Err(WireError::TooLong {
            what,
            len: n,
            limit: limits.max_set,
        });
    }
    Ok(n)
}

pub(crate) async fn read_strings<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
    what: &'static str,
) -> Result<Vec<String>, WireError> {
    let n = read_count(r, limits, what).await?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(read_string(r, limits, what).await?);
    }
    Ok(out)
}

pub(crate) async fn read_path<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
    what: &'static str,
) -> Result<crate::StorePath, WireError> {
    let s = read_string(r, limits, what).await?;
    crate::StorePath::new(s).map_err(|e| WireError::Invalid(e.to_string()))
}

pub(crate) async fn read_path_set<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
    what: &'static str,
) -> Result<std::collections::BTreeSet<crate::StorePath>, WireError> {
    let n = read_count(r, limits, what).await?;
    let mut out = std::collections::BTreeSet::new();
    for _ in 0..n {
        out.insert(read_path(r, limits, what).await?);
    }
    Ok(out)
}
