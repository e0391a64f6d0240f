//! A throwaway PostgreSQL server of a test's own: `initdb` into a temporary directory, trust
//! authentication, a free port on 127.0.0.1, and a unix socket in the same directory. A test
//! can SIGKILL it (the postmaster and its backends: a crash, recovered from the WAL on the
//! next start) and start it again on the same port and data directory. Dropping it stops it
//! at once and removes the directory.
//!
//! The binaries come from `SIGNAL_BUS_PG_BINDIR`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`. `initdb` refuses to run as root: as root, the directory is
//! handed to the `postgres` user and every command runs through `runuser -u postgres --`.
//! It never touches the machine's shared server (port 5432).

#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The superuser `initdb` creates (`-U`), whatever the OS user is.
pub const SUPERUSER: &str = "postgres";

/// A PostgreSQL server of the test's own.
pub struct PgServer {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The temporary directory holding everything (data, socket, log).
    pub dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    bindir: PathBuf,
    /// Root runs the server as the `postgres` user.
    as_postgres: bool,
    running: bool,
}

impl PgServer {
    /// Initialises a fresh cluster and starts it. `Err` says why (no binaries, initdb or
    /// start failed, with the server log's tail).
    pub fn new() -> Result<PgServer, String> {
        let bindir = find_bindir()?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("signal-bus-pg-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let socket_dir = dir.join("sock");
        std::fs::create_dir_all(&socket_dir)
            .map_err(|e| format!("create {}: {e}", socket_dir.display()))?;
        let as_postgres = effective_uid() == Some(0);
        let mut server = PgServer {
            port,
            data: dir.join("data"),
            log: dir.join("server.log"),
            socket_dir,
            dir,
            bindir,
            as_postgres,
            running: false,
        };
        if as_postgres {
            let out = Command::new("chown")
                .arg("-R")
                .arg(format!("{SUPERUSER}:"))
                .arg(&server.dir)
                .output()
                .map_err(|e| format!("run chown: {e}"))?;
            check("chown the server directory to postgres", &out)?;
        }
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&server.data)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        check("initdb", &out)?;
        server.start()?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Whether the server was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Starts the server (again, after [`kill`](PgServer::kill): crash recovery runs first)
    /// and waits until it accepts connections.
    pub fn start(&mut self) -> Result<(), String> {
        assert!(!self.running, "the server is already running");
        assert_ne!(self.port, 5432, "never the machine's shared server");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.socket_dir.display()
        );
        // A killed server's backends may hold its shared memory for a moment: retry.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-o", &options, "-w", "-t", "60", "start"])
                .output()
                .map_err(|e| format!("run pg_ctl start: {e}"))?;
            if out.status.success() && self.port_open() {
                self.running = true;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "pg_ctl start failed: {}\n{}\nserver log:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr),
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILLs the postmaster (pid from `postmaster.pid`) and its backends, and waits until
    /// they are gone and the port is closed. No shutdown checkpoint: the next start recovers.
    pub fn kill(&mut self) {
        assert!(
            self.kill_processes(),
            "PostgreSQL still up on port {} after SIGKILL",
            self.port
        );
    }

    /// [`kill`](PgServer::kill) without the panic: whether everything is gone.
    fn kill_processes(&mut self) -> bool {
        self.running = false;
        let Some(pid) = self.postmaster_pid().filter(|&p| is_postgres(p)) else {
            return !self.port_open();
        };
        // The backends first noted, then the postmaster killed: it forks no more after that.
        let children: Vec<u32> = children_of(pid)
            .into_iter()
            .filter(|&c| is_postgres(c))
            .collect();
        sigkill(pid);
        for &c in &children {
            sigkill(c);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let gone = !alive(pid) && !children.iter().any(|&c| alive(c)) && !self.port_open();
            if gone {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether something accepts TCP connections on the port.
    pub fn port_open(&self) -> bool {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        )
        .is_ok()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// A command running `program` from the server's bindir, as `postgres` when root.
    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", SUPERUSER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // The postgres user may not be allowed into the test's working directory.
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.postmaster_pid().is_some_and(is_postgres) {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "20", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            // Whatever is left (a failed stop) goes the hard way.
            let _ = self.kill_processes();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `SIGNAL_BUS_PG_BINDIR`, `pg_config --bindir`, or the newest `/usr/lib/postgresql/*/bin`.
fn find_bindir() -> Result<PathBuf, String> {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(d) = std::env::var("SIGNAL_BUS_PG_BINDIR") {
        let d = PathBuf::from(d);
        return if has_initdb(&d) {
            Ok(d)
        } else {
            Err(format!(
                "SIGNAL_BUS_PG_BINDIR={} has no initdb",
                d.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_initdb(&d) {
                return Ok(d);
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL binaries (pg_config, /usr/lib/postgresql): {e}"))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no PostgreSQL binaries under /usr/lib/postgresql/*/bin".to_owned())
}

/// A port nothing listens on right now (the kernel's ephemeral range: never 5432).
fn free_port() -> Result<u16, String> {
    for _ in 0..10 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("bind a free port: {e}"))?
            .port();
        if port != 5432 {
            return Ok(port);
        }
    }
    Err("no free port".to_owned())
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `/proc/<pid>/stat`'s state and ppid (the fields after the parenthesised name).
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` exists and is not a zombie (nobody may reap it in a container).
fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Whether `pid` is a live `postgres` process (never signal a recycled pid).
fn is_postgres(pid: u32) -> bool {
    alive(pid)
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres")
}

/// The processes whose parent is `pid` (a postmaster's backends and helpers).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| matches!(stat(p), Some((_, ppid)) if ppid == pid))
        .collect()
}

fn sigkill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
