//! A fake server over `tokio::io::duplex` that answers garbage: clean errors, never a hang or
//! an allocation bomb.

use std::sync::Arc;
use std::time::Duration;

use fleet_store::serve::{NarMsg, ServeClient, SERVE_MAGIC_2};
use fleet_store::{Error, PathInfo, StorePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);
const P: &str = "/nix/store/qpc3ingl0x25i91qhblg0iaxkbjwa8sh-probe-a-1.0";

fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Returns the client's (reader, writer) and a task that plays the server: reads the magic,
/// then writes `reply` and keeps the connection open (reading and discarding input).
fn fake(
    reply: Vec<u8>,
) -> (
    tokio::io::ReadHalf<DuplexStream>,
    tokio::io::WriteHalf<DuplexStream>,
) {
    let (client, mut server) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let mut magic = [0u8; 8];
        if server.read_exact(&mut magic).await.is_err() {
            return;
        }
        let _ = server.write_all(&reply).await;
        let mut sink = [0u8; 4096];
        // Hold the stream open but stop reading after a while, to prove no hang either way.
        for _ in 0..4 {
            if matches!(server.read(&mut sink).await, Ok(0) | Err(_)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    tokio::io::split(client)
}

async fn connect(
    reply: Vec<u8>,
) -> Result<ServeClient<tokio::io::ReadHalf<DuplexStream>, tokio::io::WriteHalf<DuplexStream>>, Error>
{
    let (r, w) = fake(reply);
    tokio::time::timeout(T, ServeClient::handshake(r, w, "fake"))
        .await
        .expect("no hang")
}

fn path() -> StorePath {
    StorePath::new(P).unwrap()
}

#[tokio::test]
async fn bad_magic_and_old_version() {
    let e = connect(u64s(&[0xdead_beef, 0x207])).await.err().unwrap();
    assert!(
        matches!(
            e,
            Error::BadMagic {
                got: 0xdead_beef,
                ..
            }
        ),
        "{e}"
    );
    let e = connect(u64s(&[SERVE_MAGIC_2, 0x103])).await.err().unwrap();
    assert!(matches!(e, Error::VersionTooOld { .. }), "{e}");
    // Older server: negotiated down, and AddToStoreNar refused up front.
    let mut c = connect(u64s(&[SERVE_MAGIC_2, 0x204])).await.unwrap();
    assert_eq!(c.version(), 0x204);
    let (_tx, rx) = mpsc::channel(1);
    let e = c.add_stream(rx, &mut |_| {}).await.unwrap_err();
    assert!(matches!(e, Error::VersionTooOld { need: 0x205, .. }), "{e}");
    // Newer server: we announce 0x207.
    let c = connect(u64s(&[SERVE_MAGIC_2, 0x208])).await.unwrap();
    assert_eq!(c.version(), 0x207);
}

#[tokio::test]
async fn huge_lengths_are_refused() {
    // Set count of 2^60.
    let mut c = connect(u64s(&[SERVE_MAGIC_2, 0x207, 1 << 60]))
        .await
        .unwrap();
    let e = tokio::time::timeout(T, c.query_valid_paths(&[path()], false, false))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e, Error::TooLong { what: "valid path set", len, .. } if len == 1 << 60),
        "{e}"
    );
    // String of u64::MAX bytes.
    let mut c = connect(u64s(&[SERVE_MAGIC_2, 0x207, 1, u64::MAX]))
        .await
        .unwrap();
    let e = tokio::time::timeout(T, c.query_valid_paths(&[path()], false, false))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::TooLong { .. }), "{e}");
    // Path info list with a huge reference set.
    let mut reply = u64s(&[SERVE_MAGIC_2, 0x207, P.len() as u64]);
    reply.extend_from_slice(P.as_bytes());
    reply.extend(std::iter::repeat_n(0u8, (8 - P.len() % 8) % 8));
    reply.extend(u64s(&[0, 1 << 40]));
    let mut c = connect(reply).await.unwrap();
    let e = tokio::time::timeout(T, c.query_path_infos(&[path()]))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLong {
                what: "references",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn garbage_and_eof_mid_reply() {
    // Non-zero padding.
    let mut reply = u64s(&[SERVE_MAGIC_2, 0x207, 1, 3]);
    reply.extend_from_slice(b"abc\x01\0\0\0\0");
    let mut c = connect(reply).await.unwrap();
    let e = c
        .query_valid_paths(&[path()], false, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Protocol { detail, .. } if detail.contains("padding")),
        "{e}"
    );
    // Not a store path.
    let mut reply = u64s(&[SERVE_MAGIC_2, 0x207, 1, 8]);
    reply.extend_from_slice(b"/etc/pwd");
    let mut c = connect(reply).await.unwrap();
    let e = c
        .query_valid_paths(&[path()], false, false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    // EOF in the middle of a string: the server closes.
    let (client, mut server) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let mut m = [0u8; 8];
        server.read_exact(&mut m).await.unwrap();
        server
            .write_all(&u64s(&[SERVE_MAGIC_2, 0x207, 1, 60]))
            .await
            .unwrap();
        server.write_all(b"/nix/store/").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = server.read(&mut buf).await; // version
        drop(server);
    });
    let (r, w) = tokio::io::split(client);
    let mut c = ServeClient::handshake(r, w, "fake").await.unwrap();
    let e = tokio::time::timeout(T, c.query_valid_paths(&[path()], false, false))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e, Error::UnexpectedEof { ref host, .. } if host == "fake"),
        "{e}"
    );
}

#[tokio::test]
async fn add_with_a_server_that_answers_nonsense_or_stops_reading() {
    let info = Arc::new(PathInfo {
        path: path(),
        deriver: None,
        nar_hash: "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73".into(),
        nar_size: 10 * 1024 * 1024,
        references: Default::default(),
        sigs: vec![],
        ca: None,
    });
    // The server answers 2 instead of 1, and stops reading: the client must not block on its
    // (full) writes forever.
    let mut c = connect(u64s(&[SERVE_MAGIC_2, 0x207, 2])).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    let feeder = tokio::spawn(async move {
        tx.send(NarMsg::Start(info.clone())).await.ok();
        for _ in 0..160 {
            if tx
                .send(NarMsg::Chunk(vec![0u8; 65536].into()))
                .await
                .is_err()
            {
                return;
            }
        }
        tx.send(NarMsg::End).await.ok();
    });
    let e = tokio::time::timeout(T, c.add_stream(rx, &mut |_| {}))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(
        matches!(&e, Error::CopyFailed { acknowledged: 0, source, .. } if matches!(**source, Error::Protocol { .. })),
        "{e}"
    );
    drop(c);
    feeder.await.unwrap();
}
