//! husk-cri's streaming server (issue 13) end to end: Exec, Attach and PortForward URLs opened
//! by crictl (through a real pty for `exec -it` and `attach`) and by small clients written
//! here for each protocol version (SPDY channel.k8s.io v1..v4, WebSocket v4, v4.base64 and v5,
//! port-forward over SPDY and WebSocket), and the faults: unknown and reused tokens, an
//! unknown container, a client that disappears mid-exec (its process is killed), a container
//! that exits while attached, 8 MiB of stdin, many concurrent streams; afterwards no exec
//! FIFO, process or file descriptor is left behind.
//!
//! husk-cri runs as a child process (HUSK_CRI, SHIM_BIN, HUSK_RUNTIME as in the other tests;
//! by default the release binaries); crictl comes from hack/k8s-tools.sh (CRICTL to override).
//! Needs root, docker-registry, skopeo and umoci.

use husk_cri::sandbox::SHIM_NAMESPACE;
use husk_cri::shim::{Shim, ShimConfig};
use husk_cri::streaming::spdy::{self, Frame, HeaderDecoder, HeaderEncoder};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

mod common;
use common::{binary, build_image, connect, ctr_config, push, server_log, Registry};

struct Bins {
    cri: PathBuf,
    shim: PathBuf,
    husk: PathBuf,
    crictl: PathBuf,
}

/// Ends husk-cri and deletes the tasks of the test's pods and containers, whatever happened.
struct Guard {
    dir: PathBuf,
    server: Option<Child>,
    shim: ShimConfig,
    ids: Vec<(String, &'static str)>,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- husk-cri log (end) ----\n{}", server_log(&self.dir));
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let state = self.dir.join("state");
        for (id, kind) in self.ids.iter().rev() {
            let _ = Shim::cleanup(&self.shim, SHIM_NAMESPACE, id, &state.join(kind).join(id));
        }
        let sock = self.shim.address.display().to_string();
        for (pid, cmd) in processes_with("containerd-shim-husk-v2") {
            if cmd.contains(&sock) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut below: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in below {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cmd.contains(needle) {
            out.push((pid, cmd));
        }
    }
    out
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Test context: the CRI client and what the cases need.
struct Ctx {
    rt: RuntimeServiceClient<Channel>,
    dir: PathBuf,
    sock: PathBuf,
    crictl: PathBuf,
}

impl Ctx {
    fn crictl(&self) -> Command {
        let mut c = Command::new(&self.crictl);
        let ep = format!("unix://{}", self.sock.display());
        c.args([
            "--runtime-endpoint",
            &ep,
            "--image-endpoint",
            &ep,
            "--timeout",
            "30s",
        ]);
        c
    }

    async fn exec_url(&mut self, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> String {
        self.rt
            .exec(cri::ExecRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .expect("Exec")
            .into_inner()
            .url
    }
}

// ---------------------------------------------------------------- HTTP upgrade (test client)

/// Opens `url` and upgrades it; the connection and the response head.
async fn upgrade(url: &str, headers: &[(&str, &str)]) -> (tokio::net::TcpStream, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.expect("read head") == 0 {
            break;
        }
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A minimal SPDY client: opens streams, sends, collects what comes back per stream.
struct SpdyClient {
    rd: tokio::net::tcp::OwnedReadHalf,
    wr: tokio::net::tcp::OwnedWriteHalf,
    enc: HeaderEncoder,
    dec: HeaderDecoder,
    next: u32,
}

impl SpdyClient {
    async fn open(url: &str, protocols: &[&str]) -> (SpdyClient, String) {
        let mut hs = vec![("Upgrade", "SPDY/3.1")];
        for p in protocols {
            hs.push(("X-Stream-Protocol-Version", p));
        }
        let (s, head) = upgrade(url, &hs).await;
        assert_eq!(status_of(&head), 101, "{head}");
        let (rd, wr) = s.into_split();
        (
            SpdyClient {
                rd,
                wr,
                enc: HeaderEncoder::new(),
                dec: HeaderDecoder::new(),
                next: 1,
            },
            head,
        )
    }

    async fn send(&mut self, f: Frame) {
        let b = spdy::encode_frame(&f, &mut self.enc).expect("encode");
        self.wr.write_all(&b).await.expect("write frame");
    }

    async fn stream(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next;
        self.next += 2;
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.send(Frame::SynStream {
            id,
            fin: false,
            headers,
        })
        .await;
        id
    }

    async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        for chunk in data.chunks(16 << 10) {
            self.send(Frame::Data {
                id,
                fin: false,
                data: chunk.to_vec(),
            })
            .await;
        }
        if fin {
            self.send(Frame::Data {
                id,
                fin: true,
                data: vec![],
            })
            .await;
        }
    }

    /// Reads until the server closes the connection (or `within`): the data per stream.
    async fn collect(&mut self, within: Duration) -> HashMap<u32, Vec<u8>> {
        let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
        let until = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(until, spdy::read_frame(&mut self.rd, &mut self.dec))
                .await
            {
                Ok(Ok(Some(Frame::Data { id, data, .. }))) => {
                    got.entry(id).or_default().extend(data)
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(_)) => return got,
                Err(_) => panic!("the server did not close the connection within {within:?}"),
            }
        }
    }
}

/// Exec over SPDY with `version`; stdin sent then closed; (stdout, stderr, error stream).
async fn spdy_exec(url: &str, version: &str, stdin: &[u8], tty: bool) -> (String, String, String) {
    let (mut c, head) = SpdyClient::open(url, &[version]).await;
    assert_eq!(
        header_of(&head, "X-Stream-Protocol-Version"),
        Some(version),
        "{head}"
    );
    let err = c.stream(&[("streamType", "error")]).await;
    let sin = c.stream(&[("streamType", "stdin")]).await;
    let out = c.stream(&[("streamType", "stdout")]).await;
    let serr = if tty {
        0
    } else {
        c.stream(&[("streamType", "stderr")]).await
    };
    let resize = if tty && version != "channel.k8s.io" && version != "v2.channel.k8s.io" {
        let r = c.stream(&[("streamType", "resize")]).await;
        c.data(r, br#"{"Width":100,"Height":40}"#, false).await;
        r
    } else {
        0
    };
    let _ = resize;
    c.data(sin, stdin, true).await;
    let got = c.collect(Duration::from_secs(60)).await;
    let s =
        |id: u32| String::from_utf8_lossy(got.get(&id).map(|v| &v[..]).unwrap_or(b"")).into_owned();
    (s(out), s(serr), s(err))
}

// ------------------------------------------------------------------------ WebSocket client

async fn ws_open(
    url: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().expect("ws request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
    let rest = url.strip_prefix("http://").expect("http url");
    let host = &rest[..rest.find('/').expect("path")];
    let tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("websocket handshake");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    ws
}

/// Exec over WebSocket: per-channel data (channel byte stripped; base64 decoded).
async fn ws_exec(url: &str, protocol: &str, stdin: &[u8]) -> HashMap<u8, Vec<u8>> {
    use base64::Engine;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let b64 = protocol.contains("base64");
    let enc = |ch: u8, d: &[u8]| {
        if b64 {
            Message::Text(format!(
                "{}{}",
                (b'0' + ch) as char,
                base64::engine::general_purpose::STANDARD.encode(d)
            ))
        } else {
            let mut v = vec![ch];
            v.extend_from_slice(d);
            Message::Binary(v)
        }
    };
    let mut ws = ws_open(url, protocol).await;
    ws.send(enc(0, stdin)).await.expect("send stdin");
    if protocol.starts_with("v5.") {
        ws.send(Message::Binary(vec![255, 0]))
            .await
            .expect("close stdin");
    }
    let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = match tokio::time::timeout_at(until, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => break,
            Err(_) => panic!("websocket exec did not end"),
        };
        let (ch, d) = match m {
            Message::Binary(b) if !b.is_empty() => (b[0], b[1..].to_vec()),
            Message::Text(t) if !t.is_empty() => (
                t.as_bytes()[0] - b'0',
                base64::engine::general_purpose::STANDARD
                    .decode(&t.as_bytes()[1..])
                    .expect("base64"),
            ),
            Message::Close(_) => break,
            _ => continue,
        };
        got.entry(ch).or_default().extend(d);
    }
    got
}

// ------------------------------------------------------------------------------ pty helper

/// A child on a new pty (its controlling terminal); the master side.
struct PtyChild {
    child: Child,
    master: std::fs::File,
}

impl PtyChild {
    fn spawn(mut cmd: Command) -> PtyChild {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let fd = slave.as_raw_fd();
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave.try_clone().expect("dup")));
        // SAFETY: runs in the forked child before exec: setsid and ioctl are async-signal-safe;
        // the fd is the pty slave, open in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(fd, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on pty");
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).expect("getfl");
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK,
            ),
        )
        .expect("setfl");
        PtyChild { child, master }
    }

    fn write(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).expect("write pty");
    }

    /// Reads the pty until `want` appears (or panics after `within`); all read so far.
    fn expect(&mut self, seen: &mut String, want: &str, within: Duration) {
        let until = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while !seen.contains(want) {
            match self.master.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => {}
            }
            assert!(
                Instant::now() < until,
                "pty output has no {want:?} after {within:?}: {seen:?}"
            );
        }
    }

    fn wait(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let _ = self.master.read(&mut buf);
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_get(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the forwarded port");
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("send GET");
    let mut r = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut r)).await;
    String::from_utf8_lossy(&r).into_owned()
}

// ---------------------------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streaming_exec_attach_port_forward() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs pods and containers: run it as root"
    );
    if let Some(t) = common::tools_missing() {
        panic!("{t} is not installed (apt-get install docker-registry skopeo umoci)");
    }
    let crictl = match std::env::var_os("CRICTL") {
        Some(p) => PathBuf::from(p),
        None => {
            let out = common::run(
                Command::new("bash")
                    .arg(common::repo().join("hack/k8s-tools.sh"))
                    .arg("crictl"),
            );
            PathBuf::from(out.trim()).join("crictl")
        }
    };
    let bins = Bins {
        cri: binary("HUSK_CRI", "husk-cri"),
        shim: binary("SHIM_BIN", "containerd-shim-husk-v2"),
        husk: binary("HUSK_RUNTIME", "husk"),
        crictl,
    };
    for b in [&bins.cri, &bins.shim, &bins.husk, &bins.crictl] {
        assert!(b.is_file(), "{} missing", b.display());
    }
    let reg = Registry::start("");
    let oci = build_image();
    let image = format!("{}/husk/busybox:latest", reg.host());
    push(&oci, &image, &[]);

    let tmp = tempfile::Builder::new()
        .prefix("husk-cri-stream-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let sock = dir.join("cri.sock");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir logs");
    let mut guard = Guard {
        dir: dir.clone(),
        server: None,
        shim: ShimConfig {
            shim_bin: bins.shim.clone(),
            runtime: Some(bins.husk.clone()),
            address: sock.clone(),
            events: dir.join("state").join("events.sock"),
        },
        ids: Vec::new(),
        children: Vec::new(),
    };
    let log = std::fs::File::create(dir.join("husk-cri.log")).expect("log");
    let server = Command::new(&bins.cri)
        .arg("--listen")
        .arg(&sock)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--shim")
        .arg(&bins.shim)
        .arg("--runtime")
        .arg(&bins.husk)
        .args(["--stream-address", "127.0.0.1", "--stream-port", "0"])
        .args(["--log-level", "debug"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn husk-cri");
    let server_pid = server.id();
    guard.server = Some(server);
    let ch = connect(&sock, guard.server.as_mut().expect("server"), &dir).await;
    let rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    img.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("PullImage");
    let mut cx = Ctx {
        rt,
        dir: dir.clone(),
        sock: sock.clone(),
        crictl: bins.crictl.clone(),
    };
    let name = format!("stream-{}", std::process::id());
    let pod_cfg = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: name.clone(),
            namespace: "husk-cri-test".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = cx
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    guard.ids.push((pod.clone(), "sandboxes"));
    let rt0 = cx.rt.clone();
    let create = |cfg: cri::ContainerConfig| {
        let mut rt = rt0.clone();
        let pod = pod.clone();
        let pod_cfg = pod_cfg.clone();
        async move {
            let id = rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(cfg),
                    sandbox_config: Some(pod_cfg),
                })
                .await
                .expect("CreateContainer")
                .into_inner()
                .container_id;
            rt.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
            id
        }
    };
    // A long-running container for exec, one with an interactive shell for attach, one that
    // serves HTTP on 8080 for port-forward.
    let main = create(ctr_config(&image, "main", &["sleep", "100000"])).await;
    guard.ids.push((main.clone(), "containers"));
    let mut sh_cfg = ctr_config(&image, "shell", &["sh"]);
    sh_cfg.stdin = true;
    sh_cfg.tty = true;
    let shell = create(sh_cfg).await;
    guard.ids.push((shell.clone(), "containers"));
    let web = create(ctr_config(
        &image,
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo pf-ok > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    ))
    .await;
    guard.ids.push((web.clone(), "containers"));
    let fds_before = fd_count(server_pid);

    // ---- crictl exec without a tty: output split, exit code carried back ----
    let out = cx
        .crictl()
        .args(["exec", &main, "sh", "-c", "echo out; echo err >&2; exit 3"])
        .output()
        .expect("crictl exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err\n"),
        "{out:?}"
    );
    // crictl reads the exit code from the v4 status and says so (and exits 1, as with
    // containerd).
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("command terminated with exit code 3"),
        "{out:?}"
    );
    assert!(!out.status.success(), "{out:?}");
    let out = cx
        .crictl()
        .args(["exec", &main, "echo", "hi"])
        .output()
        .expect("crictl exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{out:?}");
    assert!(out.status.success(), "{out:?}");

    // ---- crictl exec -it through a pty: interactive shell, terminal size, exit code ----
    {
        let mut c = cx.crictl();
        c.args(["exec", "-it", &main, "sh"]);
        let mut p = PtyChild::spawn(c);
        let mut seen = String::new();
        p.write("echo calc-$((6*7))\n");
        p.expect(&mut seen, "calc-42", Duration::from_secs(30));
        p.write("tty; exit 5\n");
        p.expect(&mut seen, "/dev/pts/", Duration::from_secs(30));
        p.expect(
            &mut seen,
            "command terminated with exit code 5",
            Duration::from_secs(30),
        );
        assert_eq!(p.wait(Duration::from_secs(30)), Some(1), "{seen:?}");
    }

    // ---- crictl attach -it through a pty; detaching leaves the container running ----
    {
        let mut c = cx.crictl();
        c.args(["attach", "-it", &shell]);
        let mut p = PtyChild::spawn(c);
        let mut seen = String::new();
        std::thread::sleep(Duration::from_millis(500));
        p.write("echo attached-$((2+3))\n");
        p.expect(&mut seen, "attached-5", Duration::from_secs(30));
        drop(p);
        // Attach again after output started: new output only.
        let mut c = cx.crictl();
        c.args(["attach", "-it", &shell]);
        let mut p = PtyChild::spawn(c);
        let mut seen2 = String::new();
        std::thread::sleep(Duration::from_millis(500));
        p.write("echo again-$((3+4))\n");
        p.expect(&mut seen2, "again-7", Duration::from_secs(30));
        assert!(!seen2.contains("attached-5"), "{seen2:?}");
        drop(p);
        let st = cx
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: shell.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status");
        assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    }

    // ---- crictl port-forward: several concurrent connections ----
    {
        let local = common::free_port();
        let mut c = cx.crictl();
        c.args(["port-forward", &pod, &format!("{local}:8080")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        guard.children.push(c.spawn().expect("crictl port-forward"));
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", local)).is_err() {
            assert!(
                Instant::now() < until,
                "crictl port-forward does not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let gets: Vec<_> = (0..4).map(|_| tokio::spawn(http_get(local))).collect();
        for g in gets {
            let body = g.await.expect("GET");
            assert!(
                body.contains("200 OK") && body.ends_with("pf-ok\n"),
                "{body:?}"
            );
        }
        if let Some(mut c) = guard.children.pop() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    // ---- SPDY port-forward by hand: two ports at once, one nobody listens on ----
    {
        let url = cx
            .rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url;
        let (mut c, head) = SpdyClient::open(&url, &["portforward.k8s.io"]).await;
        assert_eq!(
            header_of(&head, "X-Stream-Protocol-Version"),
            Some("portforward.k8s.io")
        );
        let e1 = c
            .stream(&[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "1"),
            ])
            .await;
        let d1 = c
            .stream(&[("streamType", "data"), ("port", "8080"), ("requestID", "1")])
            .await;
        let e2 = c
            .stream(&[
                ("streamType", "error"),
                ("port", "8099"),
                ("requestID", "2"),
            ])
            .await;
        let d2 = c
            .stream(&[("streamType", "data"), ("port", "8099"), ("requestID", "2")])
            .await;
        c.data(d1, b"GET /index.html HTTP/1.0\r\n\r\n", true).await;
        let _ = d2;
        // The server keeps the connection: collect for a while, then check.
        let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Ok(Some(f))) =
            tokio::time::timeout_at(until, spdy::read_frame(&mut c.rd, &mut c.dec)).await
        {
            if let Frame::Data { id, data, .. } = f {
                got.entry(id).or_default().extend(data);
            }
        }
        let s = |id: u32| {
            String::from_utf8_lossy(got.get(&id).map(|v| &v[..]).unwrap_or(b"")).into_owned()
        };
        assert!(s(d1).ends_with("pf-ok\n"), "{:?}", s(d1));
        assert_eq!(s(e1), "");
        assert!(s(e2).contains("8099"), "error stream: {:?}", s(e2));
    }

    // ---- WebSocket port-forward ----
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let url = cx
            .rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url;
        let mut ws = ws_open(&format!("{url}?port=8080"), "v4.channel.k8s.io").await;
        let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
        let mut sent = false;
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        while !String::from_utf8_lossy(got.get(&0).map(|v| &v[..]).unwrap_or(b"")).contains("pf-ok")
        {
            let m = tokio::time::timeout_at(until, ws.next())
                .await
                .expect("websocket port-forward answer")
                .expect("open")
                .expect("message");
            if let Message::Binary(b) = m {
                got.entry(b[0]).or_default().extend(&b[1..]);
            }
            // Both channels start with the port, little endian.
            if !sent
                && got.get(&0).map(|v| v.len()) >= Some(2)
                && got.get(&1).map(|v| v.len()) >= Some(2)
            {
                assert_eq!(&got[&0][..2], &8080u16.to_le_bytes());
                assert_eq!(&got[&1][..2], &8080u16.to_le_bytes());
                let mut m = vec![0u8];
                m.extend_from_slice(b"GET /index.html HTTP/1.0\r\n\r\n");
                ws.send(Message::Binary(m)).await.expect("send");
                sent = true;
            }
        }
    }

    // ---- each SPDY remotecommand version, with stdin, stdout, stderr and the exit code ----
    for v in [
        "channel.k8s.io",
        "v2.channel.k8s.io",
        "v3.channel.k8s.io",
        "v4.channel.k8s.io",
    ] {
        let url = cx
            .exec_url(&main, &["sh", "-c", "cat; echo e >&2; exit 7"], false, true)
            .await;
        let (out, err, status) = spdy_exec(&url, v, b"hello spdy\n", false).await;
        assert_eq!(out, "hello spdy\n", "{v}");
        assert_eq!(err, "e\n", "{v}");
        if v == "v4.channel.k8s.io" {
            let s: serde_json::Value = serde_json::from_str(&status).expect("status json");
            assert_eq!(s["status"], "Failure", "{status}");
            assert_eq!(s["reason"], "NonZeroExitCode", "{status}");
            assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode", "{status}");
            assert_eq!(s["details"]["causes"][0]["message"], "7", "{status}");
        } else {
            assert!(status.contains("exit code 7"), "{v}: {status:?}");
        }
        // Success: v4 says so, older versions say nothing.
        let url = cx.exec_url(&main, &["true"], false, false).await;
        let (_, _, status) = spdy_exec_no_stdin(&url, v).await;
        if v == "v4.channel.k8s.io" {
            assert_eq!(status, r#"{"metadata":{},"status":"Success"}"#);
        } else {
            assert_eq!(status, "", "{v}");
        }
    }
    // tty with the resize stream (v3+): the terminal size reaches the process.
    {
        let url = cx
            .exec_url(&main, &["sh", "-c", "sleep 1; stty size"], true, true)
            .await;
        let (out, _, status) = spdy_exec(&url, "v4.channel.k8s.io", b"", true).await;
        assert_eq!(out, "40 100\r\n", "{status}");
    }

    // ---- WebSocket v4, v4.base64, v5 (stdin closed by the close signal) ----
    for p in [
        "v4.channel.k8s.io",
        "v4.base64.channel.k8s.io",
        "v5.channel.k8s.io",
    ] {
        let cmd: &[&str] = if p.starts_with("v5.") {
            &["sh", "-c", "cat; echo e >&2; exit 4"]
        } else {
            &["sh", "-c", "head -c 9; echo e >&2; exit 4"]
        };
        let url = cx.exec_url(&main, cmd, false, true).await;
        let got = ws_exec(&url, p, b"hello ws\n").await;
        let s = |ch: u8| {
            String::from_utf8_lossy(got.get(&ch).map(|v| &v[..]).unwrap_or(b"")).into_owned()
        };
        assert_eq!(s(1), "hello ws\n", "{p}");
        assert_eq!(s(2), "e\n", "{p}");
        let st: serde_json::Value = serde_json::from_str(&s(3)).expect("status json");
        assert_eq!(st["details"]["causes"][0]["message"], "4", "{p}");
    }

    // ---- faults ----
    // unknown token; a used token
    {
        let addr = {
            let url = cx.exec_url(&main, &["true"], false, false).await;
            let rest = url.strip_prefix("http://").expect("url").to_string();
            let (_, _, status) = spdy_exec_no_stdin(&url, "v4.channel.k8s.io").await;
            assert!(status.contains("Success"));
            let (_, head) = upgrade(&url, &[("Upgrade", "SPDY/3.1")]).await;
            assert_eq!(status_of(&head), 404, "a used token: {head}");
            rest[..rest.find('/').expect("path")].to_string()
        };
        let (_, head) = upgrade(
            &format!("http://{addr}/exec/0123456789abcdef0123456789abcdef"),
            &[("Upgrade", "SPDY/3.1")],
        )
        .await;
        assert_eq!(status_of(&head), 404, "{head}");
    }
    // unknown container
    {
        let e = cx
            .rt
            .exec(cri::ExecRequest {
                container_id: "nosuchcontainer".into(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
            .await
            .expect_err("Exec on an unknown container");
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    }
    // a client that disappears mid-exec: its process is killed
    {
        let marker = format!("{}", 7000 + std::process::id() % 1000);
        let url = cx.exec_url(&main, &["sleep", &marker], false, true).await;
        let (mut c, _) = SpdyClient::open(&url, &["v4.channel.k8s.io"]).await;
        c.stream(&[("streamType", "error")]).await;
        c.stream(&[("streamType", "stdin")]).await;
        c.stream(&[("streamType", "stdout")]).await;
        c.stream(&[("streamType", "stderr")]).await;
        let until = Instant::now() + Duration::from_secs(20);
        while !processes_with(&format!("sleep {marker}"))
            .iter()
            .any(|(_, c)| c.trim() == format!("sleep {marker}"))
        {
            assert!(Instant::now() < until, "the exec'd sleep did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(c);
        let until = Instant::now() + Duration::from_secs(20);
        while processes_with(&format!("sleep {marker}"))
            .iter()
            .any(|(_, c)| c.trim() == format!("sleep {marker}"))
        {
            assert!(
                Instant::now() < until,
                "the exec'd process outlived its client"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // 8 MiB of stdin
    {
        let url = cx.exec_url(&main, &["wc", "-c"], false, true).await;
        let big = vec![b'x'; 8 << 20];
        let (out, _, status) = spdy_exec(&url, "v4.channel.k8s.io", &big, false).await;
        assert_eq!(out.trim(), "8388608", "{status}");
    }
    // many concurrent streams
    {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let url = cx
                .exec_url(&main, &["sh", "-c", &format!("echo n{i}")], false, false)
                .await;
            tasks.push(tokio::spawn(async move {
                let (out, _, status) = spdy_exec_no_stdin(&url, "v4.channel.k8s.io").await;
                (i, out, status)
            }));
        }
        for t in tasks {
            let (i, out, status) = t.await.expect("task");
            assert_eq!(out, format!("n{i}\n"));
            assert!(status.contains("Success"), "{status}");
        }
    }
    // a container that exits while attached: the session ends by itself
    {
        let mut cfg = ctr_config(
            &image,
            "short",
            &["sh", "-c", "read x; echo got-$x; sleep 1"],
        );
        cfg.stdin = true;
        cfg.stdin_once = true;
        // No log path (as crictl's and critest's containers): attach follows the output still.
        cfg.log_path = String::new();
        let short = create(cfg).await;
        guard.ids.push((short.clone(), "containers"));
        let url = cx
            .rt
            .attach(cri::AttachRequest {
                container_id: short.clone(),
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url;
        let (out, _, status) = spdy_exec(&url, "v4.channel.k8s.io", b"line\n", false).await;
        assert_eq!(out, "got-line\n", "{status}");
        assert!(status.contains("Success"), "{status}");
    }

    // ---- nothing left: exec FIFOs, fds of husk-cri ----
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left: Vec<_> = std::fs::read_dir(dir.join("state/exec"))
        .expect("exec dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "exec dirs left: {left:?}");
    let fds_after = fd_count(server_pid);
    assert!(
        fds_after <= fds_before + 4,
        "husk-cri fds: {fds_before} before the streams, {fds_after} after"
    );
    let _ = (&cx.dir, &reg);

    // ---- clean up: pod stopped and removed ----
    cx.rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("StopPodSandbox");
    cx.rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    // Every shim went with its task (exec processes do not keep one alive).
    let sock_s = sock.display().to_string();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<_> = processes_with("containerd-shim-husk-v2")
            .into_iter()
            .filter(|(_, c)| c.contains(&sock_s) && c.contains(" -namespace "))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "shims left after RemovePodSandbox: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Exec over SPDY without stdin: (stdout, stderr, error stream).
async fn spdy_exec_no_stdin(url: &str, version: &str) -> (String, String, String) {
    let (mut c, _) = SpdyClient::open(url, &[version]).await;
    let err = c.stream(&[("streamType", "error")]).await;
    let out = c.stream(&[("streamType", "stdout")]).await;
    let serr = c.stream(&[("streamType", "stderr")]).await;
    let got = c.collect(Duration::from_secs(60)).await;
    let s =
        |id: u32| String::from_utf8_lossy(got.get(&id).map(|v| &v[..]).unwrap_or(b"")).into_owned();
    (s(out), s(serr), s(err))
}
