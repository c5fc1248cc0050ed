//! A PostgreSQL or MariaDB server of a test's own, on a free loopback port, that the
//! test may crash and start again without disturbing the shared servers the other
//! tests use. Its data directory lives under the temp dir and goes with it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_core::Engine;

pub struct PrivateServer {
    pub engine: Engine,
    pub port: u16,
    dir: PathBuf,
    /// MariaDB runs as our child; PostgreSQL is daemonised by pg_ctl.
    mariadbd: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program args` as `user` when we are root (PostgreSQL refuses to run as root).
fn command_as(user: &str, program: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", program]).args(args);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The newest PostgreSQL of the Debian packages (`/usr/lib/postgresql/N/bin`).
fn postgres_bin(program: &str) -> String {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries under /usr/lib/postgresql (infra/services.sh installs them)")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let version = versions.last().expect("a PostgreSQL version");
    format!("/usr/lib/postgresql/{version}/bin/{program}")
}

impl PrivateServer {
    pub async fn start(engine: Engine) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("server"));
        std::fs::create_dir_all(&dir).unwrap();
        let owner = if engine == Engine::Postgres {
            "postgres"
        } else {
            "mysql"
        };
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args([owner, dir.to_str().unwrap()]);
            run(chown, "chown");
        }
        let data = dir.join("data");
        let data = data.to_str().unwrap();
        match engine {
            Engine::Postgres => run(
                command_as(
                    "postgres",
                    &postgres_bin("initdb"),
                    &["-D", data, "-U", "sluice", "-A", "trust", "--no-sync"],
                ),
                "initdb",
            ),
            Engine::Mysql => run(
                command_as(
                    "mysql",
                    "mariadb-install-db",
                    &["--no-defaults", &format!("--datadir={data}"), "--skip-test-db"],
                ),
                "mariadb-install-db",
            ),
            other => panic!("no private {other} server"),
        }
        let mut server = PrivateServer {
            engine,
            port: free_port(),
            dir,
            mariadbd: None,
        };
        server.start_again().await;
        server
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// A URL of the server's administrative database, as `Database::on` takes it.
    pub fn admin_url(&self) -> String {
        match self.engine {
            Engine::Postgres => format!("postgres://sluice@127.0.0.1:{}/postgres", self.port),
            _ => format!("mysql://sluice:sluice@127.0.0.1:{}/mysql", self.port),
        }
    }

    /// Starts the server (again) and waits until it takes connections.
    pub async fn start_again(&mut self) {
        match self.engine {
            Engine::Postgres => {
                let options = format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                    self.port,
                    self.dir.display()
                );
                let log = self.dir.join("postgres.log").display().to_string();
                run(
                    command_as(
                        "postgres",
                        &postgres_bin("pg_ctl"),
                        &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "start"],
                    ),
                    "pg_ctl start",
                );
            }
            _ => {
                // A private server: no grant tables, so the test's login needs no set-up.
                let child = Command::new("mariadbd")
                    .args([
                        "--no-defaults".to_string(),
                        format!("--datadir={}", self.data()),
                        format!("--port={}", self.port),
                        "--bind-address=127.0.0.1".into(),
                        format!("--socket={}/mysqld.sock", self.dir.display()),
                        "--user=mysql".into(),
                        "--skip-grant-tables".into(),
                        "--innodb-buffer-pool-size=32M".into(),
                        "--innodb-flush-log-at-trx-commit=0".into(),
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("mariadbd (infra/services.sh installs MariaDB)");
                self.mariadbd = Some(child);
            }
        }
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the private {} server did not start",
                self.engine
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server the hard way, as a crash or an operator's restart would: every
    /// session is cut off at once.
    pub fn crash(&mut self) {
        match self.engine {
            Engine::Postgres => run(
                command_as(
                    "postgres",
                    &postgres_bin("pg_ctl"),
                    &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
                ),
                "pg_ctl stop",
            ),
            _ => {
                if let Some(mut child) = self.mariadbd.take() {
                    child.kill().unwrap();
                    child.wait().unwrap();
                }
            }
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if self.engine == Engine::Postgres {
            let _ = command_as(
                "postgres",
                &postgres_bin("pg_ctl"),
                &["-D", &self.data(), "-m", "immediate", "stop"],
            )
            .output();
        }
        if let Some(mut child) = self.mariadbd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
