//! The policy and the credentials file reload when they change on disk, no
//! SIGHUP needed (README "Reload"), through the real binary:
//!
//! * a Kubernetes ConfigMap update (the `..data` symlink swapped to a new
//!   directory) of `[policy] file` takes effect for new requests, while a
//!   tunnel opened before keeps relaying;
//! * a broken policy file is refused with one log line naming the file and
//!   the line, counted in `bauta_policy_reloads_total{outcome="error"}`, and
//!   the running policy keeps serving;
//! * `bauta passwd` (a rename over the credentials file) changes who gets in;
//! * `bauta_policy_generation` counts the policies in force.

use std::path::Path;
use std::time::Duration;

use bauta_tests::*;

const GENERATION: &str = "bauta_policy_generation";
const RELOADS: &str = "bauta_policy_reloads_total";

const ALLOW: &str = "default = \"deny\"\n\n[[rule]]\nname = \"lab\"\naction = \"allow\"\ncidrs = [\"127.0.0.0/8\"]\n";
const DENY: &str = "default = \"deny\"\n";
/// A bad key inside a rule, on line 5.
const BROKEN: &str = "default = \"deny\"\n\n[[rule]]\nname = \"lab\"\nports = \"not a list\"\n";

/// A ConfigMap volume: `policy.toml -> ..data/policy.toml`, `..data -> ..vN`.
struct ConfigMap<'a> {
    dir: &'a Path,
    version: usize,
}

impl ConfigMap<'_> {
    fn publish(&mut self, policy: &str) {
        self.version += 1;
        let v = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&v)).expect("version dir");
        std::fs::write(self.dir.join(&v).join("policy.toml"), policy).expect("policy");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&v, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if self.version == 1 {
            std::os::unix::fs::symlink("..data/policy.toml", self.dir.join("policy.toml"))
                .expect("symlink policy.toml");
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Proxy-Authorization: {}\r\n",
        basic_credential(user, password)
    )
}

async fn wait_generation(proxy: &BautaProcess, n: f64, what: &str) {
    let got = wait_sample(proxy.admin, GENERATION, &[], Duration::from_secs(10), |v| {
        v >= n
    })
    .await;
    assert_eq!(
        got,
        Some(n),
        "{what}: {GENERATION}\nstderr:\n{}",
        proxy.stderr()
    );
}

async fn connect(proxy: &BautaProcess, target: &str, extra: &str) -> (Head, tokio::net::TcpStream) {
    connect_h1_with(proxy.listener("plain"), target, extra).await
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_and_credentials_reload_when_their_files_change() {
    bounded_for(Duration::from_secs(90), async {
        let dir = TempDir::new("policy-reload");
        let mut map = ConfigMap {
            dir: dir.path(),
            version: 0,
        };
        map.publish(ALLOW);
        let users = dir.path().join("users.txt");
        bauta::auth::passwd::set(&users, "alice", "first").expect("alice");
        let config = dir.write(
            "bauta.toml",
            "[proxy]\nname = \"bauta\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [limits]\nshutdown_grace_s = 1\n\n\
             [policy]\nfile = \"policy.toml\"\n\n\
             [auth]\nbasic_file = \"users.txt\"\nrequired = false\n",
        );
        let proxy = BautaProcess::start(&config).await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        wait_generation(&proxy, 1.0, "at start").await;

        let (h, mut held) = connect(&proxy, &target, "").await;
        assert_eq!(h.status, 200, "allowed at first");
        assert_echo(&mut held, b"before").await;

        // A ConfigMap update: new requests see the new policy; the open tunnel stays.
        map.publish(DENY);
        wait_generation(&proxy, 2.0, "after the ConfigMap swap").await;
        let (h, _) = connect(&proxy, &target, "").await;
        assert_eq!(h.status, 403, "denied by the new policy");
        assert_echo(&mut held, b"held across the reload").await;

        // A broken file: refused, counted, logged with file and line; the
        // policy in force stays.
        map.publish(BROKEN);
        let errors = wait_sample(
            proxy.admin,
            RELOADS,
            &[("outcome", "error")],
            Duration::from_secs(10),
            |v| v >= 1.0,
        )
        .await;
        assert_eq!(errors, Some(1.0), "{RELOADS}{{outcome=error}}");
        let stderr = proxy.stderr();
        let line = stderr
            .lines()
            .find(|l| l.contains("configuration not reloaded"))
            .unwrap_or_else(|| panic!("no refusal line:\n{stderr}"));
        assert!(
            line.contains("policy.toml:5"),
            "file and line in one line: {line}"
        );
        assert!(
            line.contains("trigger=file_change") || line.contains("file_change"),
            "{line}"
        );
        assert_eq!(
            metric_sample(&proxy.metrics().await, GENERATION, &[]),
            Some(2.0),
            "the refused file made no generation"
        );
        let (h, _) = connect(&proxy, &target, "").await;
        assert_eq!(h.status, 403, "the running policy still decides");

        map.publish(ALLOW);
        wait_generation(&proxy, 3.0, "after the fix").await;
        let (h, _) = connect(&proxy, &target, &basic("alice", "first")).await;
        assert_eq!(h.status, 200, "allowed again, alice signed in");

        // `bauta passwd` renames a new credentials file into place.
        bauta::auth::passwd::set(&users, "alice", "second").expect("alice again");
        wait_generation(&proxy, 4.0, "after the credentials change").await;
        let (h, _) = connect(&proxy, &target, &basic("alice", "first")).await;
        assert_eq!(h.status, 407, "the old password is gone");
        let (h, _) = connect(&proxy, &target, &basic("alice", "second")).await;
        assert_eq!(h.status, 200, "the new one works");

        assert_echo(&mut held, b"still there at the end").await;
        let ok = metric_sample(&proxy.metrics().await, RELOADS, &[("outcome", "ok")]);
        assert_eq!(ok, Some(3.0), "{RELOADS}{{outcome=ok}}");
    })
    .await
}

/// A writer that truncates the policy file and is descheduled before it
/// writes (longer than the watcher's quiet period) leaves it empty for a
/// moment: the watcher waits for the write instead of loading an empty
/// policy (which would deny everything), then reloads the complete file.
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_file_caught_empty_mid_write_is_not_loaded() {
    bounded_for(Duration::from_secs(60), async {
        let dir = TempDir::new("policy-empty");
        let policy = dir.write("policy.toml", ALLOW);
        let config = dir.write(
            "bauta.toml",
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"http1\"]\n\n\
             [policy]\nfile = \"policy.toml\"\n",
        );
        let proxy = BautaProcess::start(&config).await;
        let echo = EchoServer::start().await;
        let target = format!("127.0.0.1:{}", echo.port());
        wait_generation(&proxy, 1.0, "at start").await;
        // Truncate in place and wait well past the 200 ms quiet period.
        std::fs::write(&policy, "").expect("truncate");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let m = proxy.metrics().await;
        assert_eq!(
            metric_sample(&m, GENERATION, &[]),
            Some(1.0),
            "no reload of an empty file"
        );
        let (h, _) = connect(&proxy, &target, "").await;
        assert_eq!(h.status, 200, "the policy in force still allows");
        // The write arrives: reloaded.
        std::fs::write(&policy, DENY).expect("write");
        wait_generation(&proxy, 2.0, "after the write").await;
        let (h, _) = connect(&proxy, &target, "").await;
        assert_eq!(h.status, 403, "the complete new policy is in force");
    })
    .await
}
