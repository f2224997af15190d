//! Pull robustness against a real registry (Debian's docker-registry on loopback) behind a
//! fault-injecting TCP proxy of our own: the connection carrying a layer blob is cut part-way
//! (as a flaky network or a registry restart does), or the registry answers 503 once, or it
//! ignores Range, or it redirects blobs to storage on another host name. The pull must resume where it stopped, store exactly the blob (its digest
//! checked) and leave no temporary file behind; a download that keeps breaking fails, naming
//! the blob, with nothing half-written in the store. The image corpus itself (every format and
//! layer quirk, husk-cri and containerd side by side) is hack/image-corpus.sh.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use husk_cri::image::ImageStore;

#[macro_use]
mod common;
use common::{build_image, push, Registry};

/// What the proxy does to GETs of the target blob.
#[derive(Clone, Copy)]
struct Faults {
    /// Cut this many responses after `cut_after` body bytes.
    cuts: u32,
    cut_after: usize,
    /// Answer this many requests 503 first.
    unavailable: u32,
    /// Drop the client's Range header (a registry or CDN that ignores ranges).
    strip_range: bool,
    /// Answer 307 to blob storage (`localhost`, another host name, `?storage=1`), which then
    /// serves the blob (with the other faults), as registries backed by S3 or a CDN do.
    redirect: bool,
}

struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Range headers the target blob's requests carried.
    ranges: Arc<Mutex<Vec<String>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: u16, blob: &str, faults: Faults) -> Proxy {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind proxy: {e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let (cuts, unavailable) = (
            Arc::new(AtomicU32::new(faults.cuts)),
            Arc::new(AtomicU32::new(faults.unavailable)),
        );
        let blob = format!("/blobs/{blob}");
        let (stop2, ranges2) = (stop.clone(), ranges.clone());
        let handle = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (blob, ranges, cuts, unavailable) = (
                            blob.clone(),
                            ranges2.clone(),
                            cuts.clone(),
                            unavailable.clone(),
                        );
                        thread::spawn(move || {
                            if let Err(e) =
                                serve(conn, upstream, &blob, faults, &ranges, &cuts, &unavailable)
                            {
                                eprintln!("proxy: {e}");
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(std::time::Duration::from_millis(5))
                    }
                    Err(e) => panic!("proxy accept: {e}"),
                }
            }
        });
        Proxy {
            port,
            stop,
            ranges,
            handle: Some(handle),
        }
    }

    fn ranges(&self) -> Vec<String> {
        self.ranges.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One request per connection: the head is read, forwarded with `Connection: close` (so the
/// client never reuses it), and the answer copied back, with the faults applied.
fn serve(
    mut conn: TcpStream,
    upstream: u16,
    blob: &str,
    faults: Faults,
    ranges: &Mutex<Vec<String>>,
    cuts: &AtomicU32,
    unavailable: &AtomicU32,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        head.push(line);
    }
    let target = head
        .first()
        .is_some_and(|l| l.starts_with("GET ") && l.contains(blob));
    let at_storage = head.first().is_some_and(|l| l.contains("storage=1"));
    if target && faults.redirect && !at_storage {
        let path = head
            .first()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/");
        let port = conn.local_addr()?.port();
        if let Ok(mut r) = ranges.lock() {
            r.push("redirected".to_string());
        }
        conn.write_all(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{port}{path}?storage=1\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )?;
        return Ok(());
    }
    let mut out = String::new();
    for (i, line) in head.iter().enumerate() {
        let lower = line.to_ascii_lowercase();
        if i > 0 && lower.starts_with("connection:") {
            continue;
        }
        if target && lower.starts_with("range:") {
            if let Ok(mut r) = ranges.lock() {
                r.push(line.trim_end().to_string());
            }
            if faults.strip_range {
                continue;
            }
        }
        out.push_str(line);
    }
    out.push_str("Connection: close\r\n\r\n");
    if target
        && unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        conn.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(out.as_bytes())?;
    let cut = target
        && cuts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    // Copy the answer's head, then its body (up to the cut).
    let mut upr = BufReader::new(up);
    loop {
        let mut line = String::new();
        if upr.read_line(&mut line)? == 0 {
            return Ok(());
        }
        conn.write_all(line.as_bytes())?;
        if line == "\r\n" {
            break;
        }
    }
    let mut sent = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        let n = upr.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if cut {
            let n = n.min(faults.cut_after - sent);
            conn.write_all(&buf[..n])?;
            sent += n;
            if sent >= faults.cut_after {
                break;
            }
        } else {
            conn.write_all(&buf[..n])?;
        }
    }
    conn.flush()?;
    conn.shutdown(Shutdown::Both).or(Ok(()))
}

fn store_in(dir: &Path) -> ImageStore {
    ImageStore::open(&dir.join("store")).unwrap_or_else(|e| panic!("open store: {e}"))
}

fn tmp_entries(store: &ImageStore) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.root().join("tmp"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Pushes busybox to a fresh registry; returns it with the layer's digest and size.
fn registry_with_busybox() -> (Registry, common::OciImage) {
    let reg = Registry::start("");
    let img = build_image();
    push(&img, &format!("{}/husk/busybox:latest", reg.host()), &[]);
    (reg, img)
}

#[test]
fn blob_downloads_resume_after_the_connection_drops() {
    require_tools!();
    let (reg, img) = registry_with_busybox();
    let third = (img.layer_size / 3) as usize;
    assert!(
        third > 4096,
        "layer of {} bytes is too small",
        img.layer_size
    );
    let proxy = Proxy::start(
        reg.port,
        &img.layer_digest,
        Faults {
            cuts: 2,
            cut_after: third,
            unavailable: 1,
            strip_range: false,
            redirect: false,
        },
    );
    let tmp = tempfile::Builder::new()
        .prefix(&format!("husk-resume-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = store_in(tmp.path());
    let reference = format!("127.0.0.1:{}/husk/busybox:latest", proxy.port);
    let (rec, stats) = store
        .pull_with_stats(&reference, None)
        .unwrap_or_else(|e| panic!("pull through a flaky connection: {e}"));
    assert_eq!(rec.id, img.config_digest);
    assert_eq!(stats.blobs_fetched, 2, "config and layer, each stored once");
    // The 503 was retried from 0, then each cut resumed where the data stopped.
    assert_eq!(
        proxy.ranges(),
        vec![
            format!("Range: bytes={third}-"),
            format!("Range: bytes={}-", third * 2)
        ]
    );
    let stored = fs::read(
        store
            .blob_path(&img.layer_digest)
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("read stored blob: {e}"));
    assert_eq!(common::digest_of(&stored), img.layer_digest);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
    let dirs = store
        .layer_dirs(&reference)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(dirs[0].join("bin/busybox").is_file());
}

#[test]
fn blob_downloads_resume_from_a_registry_that_ignores_range() {
    require_tools!();
    let (reg, img) = registry_with_busybox();
    let half = (img.layer_size / 2) as usize;
    let proxy = Proxy::start(
        reg.port,
        &img.layer_digest,
        Faults {
            cuts: 1,
            cut_after: half,
            unavailable: 0,
            strip_range: true,
            redirect: false,
        },
    );
    let tmp = tempfile::Builder::new()
        .prefix(&format!("husk-resume-norange-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = store_in(tmp.path());
    let reference = format!("127.0.0.1:{}/husk/busybox:latest", proxy.port);
    let rec = store
        .pull(&reference, None)
        .unwrap_or_else(|e| panic!("pull when Range is ignored: {e}"));
    assert_eq!(rec.id, img.config_digest);
    assert_eq!(proxy.ranges(), vec![format!("Range: bytes={half}-")]);
    let stored = fs::read(
        store
            .blob_path(&img.layer_digest)
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("read stored blob: {e}"));
    assert_eq!(common::digest_of(&stored), img.layer_digest);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn a_download_that_keeps_breaking_fails_and_leaves_nothing() {
    require_tools!();
    let (reg, img) = registry_with_busybox();
    let proxy = Proxy::start(
        reg.port,
        &img.layer_digest,
        Faults {
            cuts: u32::MAX,
            cut_after: 1000,
            unavailable: 0,
            strip_range: false,
            redirect: false,
        },
    );
    let tmp = tempfile::Builder::new()
        .prefix(&format!("husk-resume-fail-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = store_in(tmp.path());
    let reference = format!("127.0.0.1:{}/husk/busybox:latest", proxy.port);
    let err = match store.pull(&reference, None) {
        Ok(r) => panic!("pull succeeded through a connection cut every 1000 bytes: {r:?}"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&img.layer_digest), "{err}");
    // first try + BLOB_RETRIES resumes, each 1000 bytes further
    let retries = husk_cri::image::BLOB_RETRIES as usize;
    assert_eq!(proxy.ranges().len(), retries, "{:?}", proxy.ranges());
    assert!(
        err.contains(&format!("after {} bytes", 1000 * (retries + 1))),
        "{err}"
    );
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
    let blob = store
        .blob_path(&img.layer_digest)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !blob.exists(),
        "a half blob is in the store: {}",
        blob.display()
    );
    assert!(store.list().unwrap_or_default().is_empty());
}

#[test]
fn blob_redirects_to_storage_are_followed_and_resumed() {
    require_tools!();
    let (reg, img) = registry_with_busybox();
    let half = (img.layer_size / 2) as usize;
    let proxy = Proxy::start(
        reg.port,
        &img.layer_digest,
        Faults {
            cuts: 1,
            cut_after: half,
            unavailable: 0,
            strip_range: false,
            redirect: true,
        },
    );
    let tmp = tempfile::Builder::new()
        .prefix(&format!("husk-redirect-{}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = store_in(tmp.path());
    let reference = format!("127.0.0.1:{}/husk/busybox:latest", proxy.port);
    let rec = store
        .pull(&reference, None)
        .unwrap_or_else(|e| panic!("pull through a redirect to blob storage: {e}"));
    assert_eq!(rec.id, img.config_digest);
    // Redirected, cut at storage, asked again (from the registry: a new redirect) with Range.
    assert_eq!(
        proxy.ranges(),
        vec![
            "redirected".to_string(),
            "redirected".to_string(),
            format!("Range: bytes={half}-")
        ]
    );
    let stored = fs::read(
        store
            .blob_path(&img.layer_digest)
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("read stored blob: {e}"));
    assert_eq!(common::digest_of(&stored), img.layer_digest);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}
