//! The Debian package, installed as an operator would: `dpkg -i`, then the
//! unit's `ExecStart` line run as the unit's user with the settings of its
//! `EnvironmentFile` (systemd itself does not run on these machines), and a
//! real token opening a socket on the installed binary.
//!
//! It changes the machine (installs, then purges the package), so it is
//! ignored by `cargo test`; `scripts/package --test` builds the `.deb` and
//! runs it as root with `REELTIME_DEB` set (`./scripts/test` does).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use reeltime_protocol::ServerMessage;
use reeltime_testkit::{TestIssuer, WsClient};
use tokio::io::{AsyncBufReadExt, BufReader};

const UNIT: &str = "/usr/lib/systemd/system/reeltime.service";
const ENV_FILE: &str = "/etc/reeltime/env";

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `Key=value` lines of the unit's `[Service]` section.
fn unit_setting(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}=:\n{unit}"))
        .trim()
        .to_string()
}

/// `KEY=value` lines of an EnvironmentFile, as systemd reads them (comments
/// and blank lines skipped, one level of quotes removed).
fn environment_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            (key.trim().to_string(), unquoted.to_string())
        })
        .collect()
}

/// Purges the package even when an assertion fails half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::process::Command::new("dpkg")
            .args(["--purge", "reeltime"])
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "installs a package: run by scripts/package --test, as root"]
async fn the_deb_installs_and_its_unit_serves_a_real_token() {
    let deb = std::env::var("REELTIME_DEB").expect("REELTIME_DEB: the .deb to install");
    run("dpkg", &["-i", &deb]);
    let _installed = Installed;

    // What was installed.
    let version = run("/usr/bin/reeltime", &["--version"]);
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(
        version.starts_with(&format!("reeltime {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let status = run("dpkg-query", &["-W", "-f=${Recommends}", "reeltime"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("ffmpeg"));
    let env_meta = std::fs::metadata(ENV_FILE).expect("the settings file");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(env_meta.permissions().mode() & 0o777, 0o640);
    let user = run("id", &["-u", "reeltime"]);
    let group = run("getent", &["group", "reeltime"]);
    assert!(!user.stdout.is_empty() && !group.stdout.is_empty());
    let gid: u32 = String::from_utf8_lossy(&group.stdout)
        .split(':')
        .nth(2)
        .and_then(|gid| gid.trim().parse().ok())
        .expect("gid");
    assert_eq!(
        env_meta.gid(),
        gid,
        "the settings file belongs to the group"
    );

    // The unit, checked by systemd's own verifier where it runs.
    let unit = std::fs::read_to_string(UNIT).expect("the unit");
    if let Ok(output) = std::process::Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
    {
        assert!(
            output.status.success(),
            "systemd-analyze verify:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ] {
        assert!(unit.contains(hardening), "{hardening} missing:\n{unit}");
    }
    let user = unit_setting(&unit, "User");
    let exec_start = unit_setting(&unit, "ExecStart");
    assert_eq!(unit_setting(&unit, "EnvironmentFile"), ENV_FILE);
    let state = format!("/var/lib/{}", unit_setting(&unit, "StateDirectory"));

    // An operator's settings: a real JWKS issuer, a free port.
    let issuer = TestIssuer::start().await;
    let shipped = std::fs::read_to_string(ENV_FILE).expect("read the settings");
    let mut settings: String = shipped
        .lines()
        .filter(|line| !line.starts_with("REELTIME_LISTEN="))
        .map(|line| format!("{line}\n"))
        .collect();
    settings.push_str("REELTIME_LISTEN=127.0.0.1:0\n");
    for (key, value) in issuer.env() {
        settings.push_str(&format!("{key}={value}\n"));
    }
    std::fs::write(ENV_FILE, &settings).expect("write the settings");

    // What systemd would do: the state directory for the user, then
    // ExecStart as that user with exactly the file's environment.
    std::fs::create_dir_all(&state).expect("state dir");
    run("chown", &[&format!("{user}:{user}"), &state]);
    // setpriv execs (runuser would fork and wait, and outlive a kill).
    let mut command = tokio::process::Command::new("setpriv");
    command.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--",
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
    ]);
    for (key, value) in environment_file(&settings) {
        command.arg(format!("{key}={value}"));
    }
    command.args(exec_start.split_whitespace());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the unit's command");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        let mut log = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if let Some((_, address)) = line.split_once("listening on http://") {
                return address.split_whitespace().next().map(str::to_string);
            }
        }
        panic!("the server stopped before listening:\n{log}");
    })
    .await
    .expect("the server listens within a minute")
    .expect("an address in the log");

    let token = issuer.token("alice", 60);
    let (_socket, ready, snapshot) =
        WsClient::open(&format!("ws://{address}/api/ws/progress"), &token).await;
    assert!(
        matches!(&ready, ServerMessage::Ready { user_id, .. } if user_id == "alice"),
        "{ready:?}"
    );
    assert!(snapshot.is_empty());
    assert!(
        std::path::Path::new(&state).join("reeltime.db").exists(),
        "the database lives in the state directory"
    );
    let owner = std::fs::metadata(&state).expect("state dir").uid();
    let uid: u32 = String::from_utf8_lossy(&run("id", &["-u", &user]).stdout)
        .trim()
        .parse()
        .expect("uid");
    assert_eq!(owner, uid);
    child.kill().await.expect("stop the server");
}
