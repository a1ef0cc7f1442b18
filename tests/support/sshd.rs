//! A real OpenSSH `sshd` on a loopback port, one per fixture, with its own host key and an
//! `authorized_keys` file in the test's folder that holds rotor's admin key. It logs in the
//! user the tests run as: creating a system account needs root and would outlive the test, so
//! the throwaway part is the `authorized_keys` file (`AuthorizedKeysFile` points at it) and the
//! server. `StrictModes no`: the file lives under /tmp, which sshd's ownership walk refuses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::postgres::free_port;

const INSTALL: &str = "apt-get install -y openssh-server openssh-client";

pub struct Sshd {
    pub port: u16,
    pub user: String,
    /// The file rotor edits.
    pub authorized_keys: PathBuf,
    /// `known_hosts` holding this server's host key, as `ssh-keyscan` writes it.
    pub known_hosts: PathBuf,
    /// rotor's admin key (OpenSSH private key file) and its public line.
    pub admin_key: PathBuf,
    pub admin_public: String,
    config: PathBuf,
    pid_file: PathBuf,
    sshd: PathBuf,
}

fn keygen(path: &Path, comment: &str) -> String {
    let keygen = super::require_program("ssh-keygen", INSTALL);
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

impl Sshd {
    /// Starts a server whose files live under `dir/sshd`.
    pub fn start(dir: &Path) -> Sshd {
        // sshd re-executes itself and wants its absolute path; Debian puts it in /usr/sbin,
        // which a non-root PATH often lacks.
        let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("`sshd` is not installed; install it with: {INSTALL}"));
        super::require_program("ssh", INSTALL);
        let dir = dir.join("sshd");
        std::fs::create_dir_all(dir.join("home/.ssh")).unwrap();
        let host_key = dir.join("host_ed25519");
        let host_public = keygen(&host_key, "host");
        let admin_key = dir.join("admin_ed25519");
        let admin_public = keygen(&admin_key, "rotor-admin");
        let authorized_keys = dir.join("home/.ssh/authorized_keys");
        // Someone else's key is on the account too: rotor must leave it alone.
        let (_, neighbour) = rotor_rotators::sshkey::ed25519_openssh("ops@laptop");
        std::fs::write(&authorized_keys, format!("{admin_public}\n{neighbour}\n")).unwrap();
        let port = free_port();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_public}\n")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let pid_file = dir.join("sshd.pid");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel VERBOSE\n",
                host_key.display(),
                pid_file.display(),
                authorized_keys.display()
            ),
        )
        .unwrap();
        // As root, sshd wants its privilege separation folder.
        if user == "root" {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let server = Sshd {
            port,
            user,
            authorized_keys,
            known_hosts,
            admin_key,
            admin_public,
            config,
            pid_file,
            sshd,
        };
        server.launch();
        server
    }

    fn launch(&self) {
        let line = format!(
            "{} -D -e -f {} 2>>{}",
            self.sshd.display(),
            self.config.display(),
            self.config.with_file_name("sshd.log").display()
        );
        let mut shell = Command::new("sh");
        shell.args(["-c", &super::watchdog_script(&line, "TERM", None)]);
        super::spawn_watchdog(shell, "sshd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start on port {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server: the host is down until `restart`.
    pub fn stop(&self) {
        let pid = std::fs::read_to_string(&self.pid_file).unwrap();
        Command::new("kill").arg(pid.trim()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "sshd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&self) {
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("sshd.log")).unwrap_or_default()
    }

    /// The lines of the `authorized_keys` file.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.authorized_keys)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// What `ssh` says to a login with `private_key` (OpenSSH format) running `command`:
    /// its output, or why it was refused.
    pub fn login(&self, private_key: &str, command: &str) -> Result<String, String> {
        let key = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(key.path(), private_key).unwrap();
        let out = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
            .arg("-i")
            .arg(key.path())
            .args(["-p", &self.port.to_string()])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(command)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}
