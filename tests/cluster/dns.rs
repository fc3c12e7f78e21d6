//! DNS against a real `basalt up`, asked with real `dig`, forwarding to a real dnsmasq.

use crate::harness::*;
use basalt_api::scheduler::{Call, CallType, Kill};
use basalt_api::{Client, Ranges, Resources, TaskId};
use std::process::{Child, Command, Stdio};

struct Dig {
    ip: String,
    port: String,
}

impl Dig {
    fn new(addr: &str) -> Dig {
        let (ip, port) = addr.rsplit_once(':').expect("ip:port");
        Dig {
            ip: ip.to_owned(),
            port: port.to_owned(),
        }
    }

    /// `dig` output (full unless `+short` is among `args`).
    fn ask(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg(format!("@{}", self.ip))
            .args(["-p", &self.port, "+tries=1", "+time=5"])
            .args(args)
            .output()
            .expect("dig runs (scripts/test.sh installs bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn short(&self, name: &str, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .ask(&["+short", name, rtype])
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .collect();
        v.sort();
        v
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq(port: u16) -> KillOnDrop {
    let child = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            &format!("--port={port}"),
            "--address=/upstream.test/10.9.8.7",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq runs (scripts/test.sh installs it)");
    KillOnDrop(child)
}

fn one_port(p: u64) -> Resources {
    Resources::new(0.1, 32.0).with_ports(Ranges::from_pairs([(p, p)]).expect("port"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_follows_tasks_and_forwards_other_names() {
    let up_port = free_port();
    let upstream = dnsmasq(up_port);
    let dir = temp_dir("dns");
    let ready = dir.join("up.ready");
    let args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.join("data").display().to_string(),
        "--master-port",
        "0",
        "--agent-port",
        "0",
        "--dns-port",
        "0",
        "--dns-http-port",
        "0",
        "--no-init",
        "--no-lb",
        "--no-universe",
        "--dns-upstream",
        &format!("127.0.0.1:{up_port}"),
        "--allocation-interval",
        "50ms",
        "--resources",
        "cpus:4;mem:2048;disk:100;ports:[32000-32099]",
        "--ready-file",
        &ready.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = Proc::spawn(&args, &ready, &dir.join("up.log"));
    let master = p.ready("master").await;
    let dig = Dig::new(&p.ready("dns").await);
    let http = p.ready("dns_http").await;

    // Cluster names exist before any task.
    assert_eq!(dig.short("leader.mesos", "A"), vec!["127.0.0.1"]);
    assert_eq!(dig.short("slave.mesos", "A"), vec!["127.0.0.1"]);
    let soa = dig.ask(&["mesos", "SOA"]);
    assert!(soa.contains("flags: qr aa"), "authoritative: {soa}");

    let fw = TestFramework::start(Client::new(&master), "marathon", None, 10).await;
    fw.launch_res("web.1", "sleep 600", one_port(32001));
    fw.launch_res("web.2", "sleep 600", one_port(32002));
    let srv = eventually("two SRV records for web", secs(20), || {
        let srv = dig.short("_web._tcp.marathon.mesos", "SRV");
        async move { Ok((srv.len() == 2).then_some(srv)) }
    })
    .await;
    assert!(
        srv[0].starts_with("0 1 32001 web-") && srv[0].ends_with(".marathon.slave.mesos."),
        "{srv:?}"
    );
    assert!(srv[1].starts_with("0 1 32002 "), "{srv:?}");
    assert_eq!(dig.short("web.marathon.mesos", "A"), vec!["127.0.0.1"]);
    let target = srv[0].split(' ').nth(3).expect("target").to_owned();
    assert_eq!(
        dig.short(&target, "A"),
        vec!["127.0.0.1"],
        "canonical name resolves"
    );
    assert_eq!(
        dig.ask(&["+tcp", "+short", "web.marathon.mesos", "A"])
            .trim(),
        "127.0.0.1",
        "TCP answers too"
    );
    assert!(
        !dig.short("1.0.0.127.in-addr.arpa", "PTR").is_empty(),
        "PTR for the agent"
    );

    // Unknown names in the domain: NXDOMAIN with the SOA; known names, other type: NODATA.
    let nx = dig.ask(&["nope.marathon.mesos", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("AUTHORITY: 1"),
        "{nx}"
    );
    let nodata = dig.ask(&["web.marathon.mesos", "AAAA"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );

    // The HTTP API, Mesos-DNS shapes.
    let services: serde_json::Value =
        reqwest::get(format!("{http}/v1/services/_web._tcp.marathon.mesos."))
            .await
            .expect("services")
            .json()
            .await
            .expect("json");
    let ports: Vec<&str> = services
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["port"].as_str())
        .collect();
    assert_eq!(ports.len(), 2, "{services}");
    let hosts: serde_json::Value = reqwest::get(format!("{http}/v1/hosts/nobody.mesos"))
        .await
        .expect("hosts")
        .json()
        .await
        .expect("json");
    assert_eq!(hosts, serde_json::json!([{"host": "", "ip": ""}]));
    let axfr: serde_json::Value = reqwest::get(format!("{http}/v1/axfr"))
        .await
        .expect("axfr")
        .json()
        .await
        .expect("json");
    let index = axfr["Index"].as_u64().expect("index");

    // A kill shows up at once, and a watcher hears of it.
    let watcher = tokio::spawn({
        let url = format!("{http}/v1/watch?index={index}&wait=30s");
        async move {
            reqwest::get(url)
                .await
                .expect("watch")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    });
    let mut kill = Call::new(Some(fw.id.clone()), CallType::Kill);
    kill.kill = Some(Kill {
        task_id: TaskId::new("web.1"),
        agent_id: None,
        kill_policy: None,
    });
    fw.call(kill).await;
    eventually("web.1 leaves the SRV answer", secs(20), || {
        let srv = dig.short("_web._tcp.marathon.mesos", "SRV");
        async move { Ok((srv.len() == 1 && srv[0].starts_with("0 1 32002 ")).then_some(())) }
    })
    .await;
    let changed = tokio::time::timeout(secs(30), watcher)
        .await
        .expect("watch returns")
        .expect("joined");
    assert!(changed["Index"].as_u64().expect("index") > index);

    // Other names go upstream; a dead upstream gives SERVFAIL, not silence.
    assert_eq!(dig.short("host.upstream.test", "A"), vec!["10.9.8.7"]);
    drop(upstream);
    let failed = dig.ask(&["host.upstream.test", "A"]);
    assert!(failed.contains("status: SERVFAIL"), "{failed}");

    fw.stop();
    kill_processes_under(&dir);
}
