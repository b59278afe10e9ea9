//! The shipped deployment files agree with the proxy they ship: `Dockerfile`,
//! `conf/kubernetes/*.yaml`, `conf/caching-proxy.service` and `Makefile.toml`.
//!
//! Ports, drain times, memory bounds and file paths are compared with the configuration the
//! proxy resolves (through the library, as the binary does), and every embedded config and
//! environment is run through `caching-proxy -t`. The unit's start and reload commands are also
//! played with the real binary (daemonized, in a temporary directory), since a wrong order
//! there only shows at run time. Nothing here builds an image, or talks to a cluster or to
//! systemd.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caching_proxy::config::sources::SETTINGS;
use caching_proxy::config::{Cli, Config};
use serde::Deserialize;
use serde_yaml::Value;
use support::proxy::{conf_dir, free_ports, run, BIN};

const MIB: u64 = 1 << 20;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// --- the proxy's own view ----------------------------------------------------------------

/// Resolves a configuration in-process, as `caching-proxy ARGS` would. `env` is given as the
/// equivalent flags (same precedence layer above the file), so the test process's own
/// environment stays out of it.
fn resolve(args: &[&str], env: &[(String, String)]) -> Config {
    let stray: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("PROXY_"))
        .collect();
    assert!(
        stray.is_empty(),
        "unset {stray:?} to run this test: it resolves configurations in-process"
    );
    let mut argv: Vec<String> = vec!["caching-proxy".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.extend(
        env.iter()
            .map(|(k, v)| format!("--{}={v}", flag_for_env(k))),
    );
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    Config::load(&cli).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// The configuration with nothing set but an origin: the built-in defaults.
fn defaults() -> Config {
    resolve(&["--origin", "http://127.0.0.1:9"], &[])
}

/// The flag for a `PROXY_*` variable; panics on a name the proxy does not read, which would
/// otherwise be silently ignored.
fn flag_for_env(name: &str) -> &'static str {
    if name == "PROXY_CONFIG" {
        return "config";
    }
    SETTINGS
        .iter()
        .find(|s| s.env == name)
        .map(|s| s.flag)
        .unwrap_or_else(|| panic!("{name} is not a variable caching-proxy reads"))
}

/// Only the `PROXY_*` variables, the ones that configure the proxy.
fn proxy_env(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.starts_with("PROXY_"))
        .cloned()
        .collect()
}

/// Runs `caching-proxy -t -c FILE` with `env`, as a container or the unit would, and expects
/// it to accept the configuration.
fn assert_config_ok(file: &Path, env: &[(String, String)], what: &str) {
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run(&["-t", "-c", file.to_str().unwrap()], &envs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("configuration OK"),
        "{what}: `caching-proxy -t -c {}` with {env:?} exited with {}:\n{stdout}{stderr}",
        file.display(),
        out.status
    );
}

fn dir_of(path: &str) -> &Path {
    Path::new(path).parent().expect("an absolute file path")
}

// --- Dockerfile ----------------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined, with the build stage it is in.
#[derive(Debug)]
struct Instruction {
    stage: usize,
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read(&root().join("Dockerfile"));
    let mut instructions = Vec::new();
    let mut stage = 0;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage += 1;
        }
        instructions.push(Instruction {
            stage,
            keyword,
            args: args.trim().to_owned(),
        });
    }
    instructions
}

/// The parts of the Dockerfile other files must agree with.
struct Image {
    uid: u32,
    /// `PROXY_*` variables set in the runtime stage.
    env: Vec<(String, String)>,
    /// The config file the entrypoint reads.
    config_path: String,
}

fn image() -> Image {
    let instructions = dockerfile();
    let last = instructions.iter().map(|i| i.stage).max().unwrap_or(0);
    let runtime = || instructions.iter().filter(move |i| i.stage == last);

    let user = runtime()
        .rfind(|i| i.keyword == "USER")
        .map(|i| i.args.clone())
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert_ne!(uid, "root", "USER is not root");
    let uid: u32 = uid.parse().unwrap_or_else(|_| {
        // A user name: find its UID where the stage creates it.
        let useradd = runtime()
            .find(|i| i.keyword == "RUN" && i.args.contains("useradd") && i.args.contains(uid))
            .unwrap_or_else(|| panic!("USER {uid}: no useradd for it in the runtime stage"));
        uid_in_useradd(&useradd.args)
    });

    let mut env = Vec::new();
    for i in runtime().filter(|i| i.keyword == "ENV") {
        for pair in i.args.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {}: write KEY=value", i.args));
            env.push((k.to_owned(), v.trim_matches('"').to_owned()));
        }
    }

    let entrypoint = runtime()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .expect("the runtime stage sets ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(&entrypoint.args)
        .unwrap_or_else(|e| panic!("ENTRYPOINT in exec (JSON) form: {e}"));
    let config_path = entrypoint
        .windows(2)
        .find(|w| w[0] == "-c" || w[0] == "--config")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| panic!("ENTRYPOINT {entrypoint:?} names the config file with -c"));

    Image {
        uid,
        env: proxy_env(&env),
        config_path,
    }
}

fn uid_in_useradd(run: &str) -> u32 {
    let words: Vec<&str> = run.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "--uid" || w[0] == "-u")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("useradd with a fixed --uid: {run}"))
}

#[test]
fn dockerfile_builds_a_release_binary_and_runs_it_unprivileged() {
    let instructions = dockerfile();
    let defaults = defaults();
    let stages = instructions.iter().map(|i| i.stage).max().unwrap_or(0);
    assert!(stages >= 2, "multi-stage: {stages} FROM line(s)");
    let in_stage = |stage: usize, keyword: &'static str| {
        instructions
            .iter()
            .filter(move |i| i.stage == stage && i.keyword == keyword)
    };

    let build_from = &in_stage(1, "FROM").next().unwrap().args;
    assert!(
        build_from.starts_with("rust:") && build_from.contains("bookworm"),
        "build stage from the official Rust image on bookworm: FROM {build_from}"
    );
    let build_name = build_from
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("AS"))
        .nth(1)
        .expect("the build stage is named (FROM ... AS build)");
    let build_runs: Vec<&str> = (1..stages)
        .flat_map(|s| in_stage(s, "RUN"))
        .map(|i| i.args.as_str())
        .collect();
    assert!(
        build_runs
            .iter()
            .any(|r| r.contains("apt-get install") && r.contains("cmake")),
        "the build stage installs cmake (pingora-core needs it): {build_runs:#?}"
    );
    assert!(
        build_runs
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the build stage runs `cargo build --release --locked`: {build_runs:#?}"
    );

    // Whatever cargo reads to build the package reaches the build stage (build.rs sets an
    // env!() the crate needs, for one).
    let build_copies: Vec<&str> = (1..stages)
        .flat_map(|s| in_stage(s, "COPY"))
        .map(|i| i.args.as_str())
        .collect();
    for input in ["Cargo.toml", "Cargo.lock", "build.rs", "src", "benches"] {
        if root().join(input).exists() {
            assert!(
                build_copies.iter().any(|c| {
                    let words: Vec<&str> = c.split_whitespace().collect();
                    words[..words.len() - 1]
                        .iter()
                        .any(|w| w.trim_end_matches('/') == input)
                }),
                "the build stage copies {input}: {build_copies:?}"
            );
        }
    }

    let runtime_from = &in_stage(stages, "FROM").next().unwrap().args;
    assert!(
        runtime_from.starts_with("debian:bookworm-slim"),
        "runtime stage from debian:bookworm-slim: FROM {runtime_from}"
    );
    let copies: Vec<&str> = in_stage(stages, "COPY").map(|i| i.args.as_str()).collect();
    let from_build = format!("--from={build_name} ");
    assert!(
        copies.iter().any(|c| c.starts_with(&from_build)
            && c.ends_with("/target/release/caching-proxy /usr/local/bin/caching-proxy")),
        "the release binary is copied from the {build_name} stage to /usr/local/bin: {copies:?}"
    );

    let image = image();
    assert!(
        copies
            .iter()
            .any(|c| *c == format!("conf/caching-proxy.yaml {}", image.config_path)),
        "the example config is copied to {}, which ENTRYPOINT reads: {copies:?}",
        image.config_path
    );
    assert_ne!(image.uid, 0, "USER is not root");
    let runtime_runs: Vec<&str> = in_stage(stages, "RUN").map(|i| i.args.as_str()).collect();
    assert!(
        runtime_runs.iter().any(|r| r.contains("ca-certificates")
            && r.contains("curl")
            && r.contains("--no-install-recommends")),
        "ca-certificates (https origins) and curl (HEALTHCHECK) are installed: {runtime_runs:?}"
    );
    let useradd = runtime_runs
        .iter()
        .find(|r| r.contains("useradd"))
        .expect("the runtime stage creates the caching-proxy user");
    assert_eq!(
        uid_in_useradd(useradd),
        image.uid,
        "USER is the created user"
    );
    assert!(
        useradd.trim_end().ends_with(" caching-proxy"),
        "the user is called caching-proxy: {useradd}"
    );

    let exposed: BTreeSet<u16> = in_stage(stages, "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE PORT"))
        .collect();
    assert_eq!(
        exposed,
        BTreeSet::from([defaults.listen.port(), defaults.admin.listen.port()]),
        "EXPOSE the default listen.port and admin.port"
    );
    assert_eq!(exposed, BTreeSet::from([3000, 9091]), "EXPOSE 3000 9091");

    let healthcheck = &in_stage(stages, "HEALTHCHECK")
        .next_back()
        .expect("a HEALTHCHECK")
        .args;
    let live = format!(
        "http://127.0.0.1:{}/health/live",
        defaults.admin.listen.port()
    );
    assert!(
        healthcheck.contains(" CMD ") && healthcheck.contains(&live),
        "HEALTHCHECK calls {live}: {healthcheck}"
    );

    // What the image runs: the example config under the image's environment.
    assert!(
        image
            .env
            .contains(&("PROXY_ADMIN_HOST".into(), "0.0.0.0".into())),
        "the image moves the admin service off loopback for probes: {:?}",
        image.env
    );
    let example = conf_dir().join("caching-proxy.yaml");
    assert_config_ok(
        &example,
        &image.env,
        "Dockerfile ENV + conf/caching-proxy.yaml",
    );
    let runs = resolve(
        &[
            "-c",
            example.to_str().unwrap(),
            "--origin",
            "http://127.0.0.1:9",
        ],
        &image.env,
    );
    assert!(
        runs.listen.ip().is_unspecified() && runs.admin.listen.ip().is_unspecified(),
        "in the container both services listen on all addresses: {} and {}",
        runs.listen,
        runs.admin.listen
    );
    for path in [&runs.server.pid_file, &runs.server.upgrade_sock] {
        assert!(
            path.starts_with("/tmp/"),
            "{path}: the non-root user can only write to /tmp"
        );
    }

    let ignored = read(&root().join(".dockerignore"));
    for dir in ["target", ".git"] {
        assert!(
            ignored
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == dir),
            ".dockerignore keeps {dir}/ out of the build context"
        );
    }
}

// --- Kubernetes ----------------------------------------------------------------------------

fn kubernetes_dir() -> PathBuf {
    conf_dir().join("kubernetes")
}

/// Every document of a (possibly multi-document) YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

fn manifests(file: &str, kind: &str) -> Vec<Value> {
    let path = kubernetes_dir().join(file);
    let docs = yaml_documents(&path);
    assert!(!docs.is_empty(), "{} has no documents", path.display());
    for doc in &docs {
        assert!(
            doc["apiVersion"].is_string()
                && doc["kind"].is_string()
                && doc["metadata"]["name"].is_string(),
            "{}: every document has apiVersion, kind and metadata.name",
            path.display()
        );
    }
    let of_kind: Vec<Value> = docs.into_iter().filter(|d| d["kind"] == kind).collect();
    assert!(!of_kind.is_empty(), "{} holds a {kind}", path.display());
    of_kind
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is a string, found {v:?}"))
}

/// The ConfigMap's `caching-proxy.yaml`, with its origin replaced by `http://127.0.0.1:9`:
/// the proxy resolves the origin at start-up, and a cluster-internal name must neither
/// resolve nor be looked up here. Returns the file (in `dir`) and the original origin.
fn configmap_config(configmap: &Value, dir: &Path) -> (PathBuf, String) {
    let text = str_of(
        &configmap["data"]["caching-proxy.yaml"],
        "data.caching-proxy.yaml",
    );
    let parsed: Value = serde_yaml::from_str(text)
        .unwrap_or_else(|e| panic!("the ConfigMap's caching-proxy.yaml is not YAML: {e}"));
    let origin = str_of(&parsed["upstream"]["origin"], "upstream.origin").to_owned();
    let uri: http::Uri = origin.parse().expect("upstream.origin is a URL");
    assert!(
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && matches!(uri.path(), "" | "/"),
        "upstream.origin is scheme://host[:port]: {origin}"
    );
    assert_eq!(
        text.matches(origin.as_str()).count(),
        1,
        "the origin appears once in the config"
    );
    let path = dir.join("caching-proxy.yaml");
    std::fs::write(&path, text.replace(origin.as_str(), "http://127.0.0.1:9")).unwrap();
    (path, origin)
}

/// A Kubernetes quantity (`384Mi`, `1Gi`, `500M`, `1048576`) in bytes.
fn quantity_bytes(q: &Value) -> u64 {
    let text = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a quantity: {other:?}"),
    };
    let units = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, unit) = units
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|d| (d, *unit)))
        .unwrap_or((text.as_str(), 1u64));
    digits.parse::<u64>().map(|n| n * unit).unwrap_or_else(|_| {
        panic!("quantity {text:?}: whole numbers with Ki/Mi/Gi/Ti/k/M/G/T only")
    })
}

/// A probe's or Service's port: a number, or the name of one of the container's ports.
fn port_of(port: &Value, container_ports: &BTreeMap<String, u16>) -> u16 {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap(),
        Value::String(name) => *container_ports
            .get(name)
            .unwrap_or_else(|| panic!("no container port named {name:?}: {container_ports:?}")),
        other => panic!("not a port: {other:?}"),
    }
}

/// How long the preStop hook delays SIGTERM (`exec: sleep N` or `sleep: {seconds: N}`).
fn pre_stop_delay(container: &Value) -> Duration {
    let pre_stop = &container["lifecycle"]["preStop"];
    if pre_stop.is_null() {
        return Duration::ZERO;
    }
    if let Some(seconds) = pre_stop["sleep"]["seconds"].as_u64() {
        return Duration::from_secs(seconds);
    }
    let command: Vec<&str> = pre_stop["exec"]["command"]
        .as_sequence()
        .map(|c| c.iter().map(|a| str_of(a, "preStop command")).collect())
        .unwrap_or_default();
    match command.as_slice() {
        [sleep, seconds] if sleep.ends_with("sleep") => {
            Duration::from_secs(seconds.parse().expect("sleep SECONDS"))
        }
        other => panic!("preStop: only a sleep is understood here, found {other:?}"),
    }
}

/// `labels` has every key/value of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_mapping().expect("a label selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_match_the_proxy_and_the_image() {
    let image = image();
    let defaults = defaults();
    let configmap = &manifests("configmap.yaml", "ConfigMap")[0];
    let deployment = &manifests("deployment.yaml", "Deployment")[0];
    let services = manifests("service.yaml", "Service");

    // The embedded configuration is valid, as the container resolves it.
    let dir = tempfile::tempdir().unwrap();
    let (config_file, origin) = configmap_config(configmap, dir.path());
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let container = &containers[0];
    for e in container["env"].as_sequence().into_iter().flatten() {
        let name = str_of(&e["name"], "env name");
        if name.starts_with("PROXY_") {
            flag_for_env(name);
        }
    }
    let literal_env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .map(|env| {
            env.iter()
                .filter(|e| e["value"].is_string())
                .map(|e| {
                    (
                        str_of(&e["name"], "env name").into(),
                        str_of(&e["value"], "env value").into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut env = image.env.clone();
    env.extend(proxy_env(&literal_env));
    assert_config_ok(
        &config_file,
        &env,
        &format!("the ConfigMap's config (origin {origin} replaced)"),
    );
    let config = resolve(&["-c", config_file.to_str().unwrap()], &env);

    // Config file: mounted where the image's entrypoint reads it.
    let entry_file = Path::new(&image.config_path);
    let key = entry_file.file_name().unwrap().to_str().unwrap();
    assert!(
        configmap["data"][key].is_string(),
        "the ConfigMap has the key {key:?} the entrypoint reads"
    );
    let mounts = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts");
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    let volume = |name: &Value| {
        volumes
            .iter()
            .find(|v| v["name"] == *name)
            .unwrap_or_else(|| panic!("no volume named {name:?}"))
    };
    let mount_at = |path: &Path, why: &str| {
        mounts
            .iter()
            .find(|m| Path::new(str_of(&m["mountPath"], "mountPath")) == path)
            .unwrap_or_else(|| panic!("nothing is mounted at {} ({why})", path.display()))
    };
    let config_mount = mount_at(entry_file.parent().unwrap(), "the config file");
    assert_eq!(
        volume(&config_mount["name"])["configMap"]["name"],
        configmap["metadata"]["name"],
        "the ConfigMap is mounted at {}",
        entry_file.parent().unwrap().display()
    );

    // Ports: the proxy's defaults, and what the ConfigMap's config listens on.
    let ports: BTreeMap<String, u16> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            let port = p["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok());
            (
                str_of(&p["name"], "port name").to_owned(),
                port.expect("containerPort"),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([("admin".into(), 9091), ("http".into(), 3000)]),
        "container ports"
    );
    assert_eq!(
        (ports["http"], ports["admin"]),
        (defaults.listen.port(), defaults.admin.listen.port()),
        "container ports are the default listen.port and admin.port"
    );
    assert_eq!(
        (ports["http"], ports["admin"]),
        (config.listen.port(), config.admin.listen.port()),
        "container ports are where the ConfigMap's config listens"
    );
    assert!(
        config.listen.ip().is_unspecified() && config.admin.listen.ip().is_unspecified(),
        "in a pod both services listen on all addresses (the kubelet probes the pod IP): {} and {}",
        config.listen,
        config.admin.listen
    );

    // Probes: on the admin port.
    for (probe, path) in [
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(
            port_of(&get["port"], &ports),
            config.admin.listen.port(),
            "{probe} goes to the admin port"
        );
    }

    // Security: effective values, the container's over the pod's.
    let security = |key: &str| {
        container["securityContext"]
            .get(key)
            .or_else(|| pod["securityContext"].get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(security("runAsNonRoot"), Value::Bool(true), "runAsNonRoot");
    assert_eq!(
        security("readOnlyRootFilesystem"),
        Value::Bool(true),
        "readOnlyRootFilesystem"
    );
    assert_eq!(
        security("allowPrivilegeEscalation"),
        Value::Bool(false),
        "allowPrivilegeEscalation"
    );
    assert_eq!(
        security("runAsUser").as_u64(),
        Some(u64::from(image.uid)),
        "runAsUser is the Dockerfile's user"
    );
    let dropped = &container["securityContext"]["capabilities"]["drop"];
    assert!(
        dropped
            .as_sequence()
            .is_some_and(|d| d.iter().any(|c| *c == "ALL")),
        "capabilities.drop has ALL: {dropped:?}"
    );

    // A read-only root filesystem: the pid file and the upgrade socket need a writable mount.
    for path in [&config.server.pid_file, &config.server.upgrade_sock] {
        let mount = mount_at(
            dir_of(path),
            &format!("{path} must be writable under a read-only root filesystem"),
        );
        assert!(
            volume(&mount["name"]).get("emptyDir").is_some(),
            "{path} is on an emptyDir"
        );
    }

    // Draining fits in the termination grace period.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .map(Duration::from_secs)
        .expect("terminationGracePeriodSeconds is set");
    let drain = pre_stop_delay(container)
        + config.server.grace_period
        + config.server.graceful_shutdown_timeout;
    assert!(
        grace > drain,
        "terminationGracePeriodSeconds ({grace:?}) must exceed preStop + grace_period + \
         graceful_shutdown_timeout ({drain:?}), or pods are killed mid-drain"
    );

    // Memory: the cache's bound plus headroom.
    let limits = &container["resources"]["limits"];
    let memory = quantity_bytes(&limits["memory"]);
    let needed = config.cache.max_bytes as u64 + 64 * MIB;
    assert!(
        memory >= needed,
        "memory limit {} MiB < cache.max_size + 64 MiB = {} MiB",
        memory / MIB,
        needed / MIB
    );
    assert!(
        quantity_bytes(&container["resources"]["requests"]["memory"]) <= memory,
        "memory request within the limit"
    );

    // The admin token comes from a Secret, optionally.
    let token = container["env"]
        .as_sequence()
        .and_then(|env| env.iter().find(|e| e["name"] == "PROXY_ADMIN_TOKEN"))
        .expect("PROXY_ADMIN_TOKEN is set from a Secret");
    let secret = &token["valueFrom"]["secretKeyRef"];
    assert!(
        secret["name"].is_string() && secret["key"].is_string(),
        "PROXY_ADMIN_TOKEN from secretKeyRef: {token:?}"
    );
    assert_eq!(
        secret["optional"],
        Value::Bool(true),
        "the token Secret is optional"
    );

    // Selectors and Services.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(
        selects(&deployment["spec"]["selector"]["matchLabels"], pod_labels),
        "the Deployment's selector matches its pod labels"
    );
    let mut http_service = false;
    for service in &services {
        let name = str_of(&service["metadata"]["name"], "Service name");
        assert!(
            selects(&service["spec"]["selector"], pod_labels),
            "Service {name} selects the Deployment's pods"
        );
        for port in service["spec"]["ports"]
            .as_sequence()
            .expect("Service ports")
        {
            let target = port.get("targetPort").unwrap_or(&port["port"]);
            let target = port_of(target, &ports);
            assert!(
                ports.values().any(|p| *p == target),
                "Service {name} targets container port {target}"
            );
            if port["port"].as_u64() == Some(80) {
                assert_eq!(
                    target,
                    config.listen.port(),
                    "Service {name}: port 80 -> the proxy"
                );
                http_service = true;
            }
        }
    }
    assert!(http_service, "a Service exposes the proxy on port 80");
}

// --- systemd -------------------------------------------------------------------------------

/// A unit file: section -> key -> values in order (keys such as ExecReload repeat).
fn unit_file(path: &Path) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut unit: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in read(path).lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let line = std::mem::take(&mut pending);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not KEY=value: {line}", path.display()));
        unit.entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    unit
}

/// The one value of `key` in a unit section.
fn one_value<'a>(section: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match section.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("[Service] {key}= once, found {other:?}"),
    }
}

/// An Exec line's words, without the `-`, `@`, `+`, `!`, `:` prefixes systemd allows.
fn exec_words(line: &str) -> Vec<String> {
    let line = line.trim_start_matches(['-', '@', '+', '!', ':']);
    line.split_whitespace().map(str::to_owned).collect()
}

/// The value after `-c`/`--config`.
fn config_arg(words: &[String]) -> Option<&str> {
    words
        .windows(2)
        .find(|w| w[0] == "-c" || w[0] == "--config")
        .map(|w| w[1].as_str())
}

/// A systemd time span in seconds (`30`, `30s`, `1min`).
fn timespan(value: &str) -> Duration {
    let (digits, unit) = value
        .find(|c: char| !c.is_ascii_digit())
        .map_or((value, ""), |i| value.split_at(i));
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("time span {value:?}"));
    match unit.trim() {
        "" | "s" | "sec" => Duration::from_secs(n),
        "min" | "m" => Duration::from_secs(n * 60),
        other => panic!("time span unit {other:?} not understood here"),
    }
}

#[test]
fn systemd_unit_runs_and_upgrades_the_daemon_the_pingora_way() {
    let path = conf_dir().join("caching-proxy.service");
    let unit = unit_file(&path);
    let service = unit.get("Service").expect("a [Service] section");
    let one = |key: &str| one_value(service, key);
    let all = |key: &str| service.get(key).cloned().unwrap_or_default();

    assert_eq!(one("Type"), "forking", "Type=forking: -d daemonizes");
    let user = one("User");
    assert!(
        !user.is_empty() && user != "root" && user != "0",
        "User= is not root: {user:?}"
    );

    // ExecStart: the daemon with its config file.
    let start = exec_words(one("ExecStart"));
    let binary = start[0].clone();
    assert!(
        binary.starts_with('/') && binary.ends_with("/caching-proxy"),
        "ExecStart runs the caching-proxy binary by absolute path: {start:?}"
    );
    let config = config_arg(&start)
        .unwrap_or_else(|| panic!("ExecStart passes -c FILE: {start:?}"))
        .to_owned();
    assert!(
        start.iter().any(|a| a == "-d"),
        "ExecStart daemonizes (-d) for Type=forking: {start:?}"
    );

    // ExecReload: `caching-proxy --reload` with the same -c, which signals the running
    // instance through its pid file and waits for the outcome (the new process validates the
    // configuration, then takes the listeners and the cache: `tests/reload.rs`).
    let reloads: Vec<Vec<String>> = all("ExecReload").iter().map(|l| exec_words(l)).collect();
    assert_eq!(reloads.len(), 1, "one ExecReload= line: {reloads:?}");
    let reload = &reloads[0];
    assert!(
        reload[0] == binary
            && config_arg(reload) == Some(config.as_str())
            && reload.iter().any(|a| a == "--reload"),
        "ExecReload= runs `caching-proxy --reload -c FILE`: {reload:?}"
    );

    // The pid file and upgrade socket the unit configures, as the proxy resolves them (the
    // installed config is conf/caching-proxy.yaml).
    let env = proxy_env(&unit_env(service));
    let example = conf_dir().join("caching-proxy.yaml");
    assert_config_ok(
        &example,
        &env,
        "the unit's Environment= + conf/caching-proxy.yaml",
    );
    let resolved = resolve(&["-c", example.to_str().unwrap()], &env);
    assert_eq!(
        one("PIDFile"),
        resolved.server.pid_file,
        "PIDFile= is the pid file the proxy writes under the unit's settings"
    );
    let run_dir = Path::new("/run").join(one("RuntimeDirectory"));
    for file in [&resolved.server.pid_file, &resolved.server.upgrade_sock] {
        assert_eq!(
            dir_of(file),
            run_dir,
            "{file} is in the RuntimeDirectory, writable by User={user}"
        );
    }

    let stop = timespan(one("TimeoutStopSec"));
    let drain = resolved.server.grace_period + resolved.server.graceful_shutdown_timeout;
    assert!(
        stop > drain,
        "TimeoutStopSec ({stop:?}) must exceed grace_period + graceful_shutdown_timeout ({drain:?})"
    );
    assert_eq!(one("Restart"), "on-failure", "Restart=on-failure");
    for (key, value) in [
        ("NoNewPrivileges", "true"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
    ] {
        assert_eq!(one(key), value, "hardening: {key}={value}");
    }
    assert!(
        one("LimitNOFILE").parse::<u64>().is_ok_and(|n| n >= 65_536),
        "LimitNOFILE >= 65536"
    );
    assert!(
        unit.get("Install")
            .and_then(|i| i.get("WantedBy"))
            .is_some_and(|w| w.iter().any(|t| t == "multi-user.target")),
        "[Install] WantedBy=multi-user.target"
    );
}

/// The unit's `Environment=` pairs.
fn unit_env(service: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
    service
        .get("Environment")
        .into_iter()
        .flatten()
        .flat_map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|pair| {
            let pair = pair.trim_matches('"');
            let (k, v) = pair.split_once('=').expect("Environment=KEY=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Sets the flag when dropped: stops the client thread even when the test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Daemons a test started: killed when it ends, whatever happened.
struct Daemons(Vec<u32>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for pid in &self.0 {
            if is_running_proxy(*pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether `pid` is a caching-proxy process that has not exited.
fn is_running_proxy(pid: u32) -> bool {
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(") ")
            .next()
            .is_some_and(|s| !s.starts_with('Z'))
    });
    running
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("caching-proxy"))
}

/// Waits for the pid file to name a process other than `previous`.
fn wait_pid(pid_file: &Path, previous: Option<u32>, log: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        match pid {
            Some(pid) if Some(pid) != previous => return pid,
            _ if Instant::now() > deadline => panic!(
                "{} names no new process (previous {previous:?}):\n{}",
                pid_file.display(),
                read(log)
            ),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits until `/health/ready` on `admin_port` answers for process `pid`.
fn wait_ready_pid(admin_port: u16, pid: u32, log: &Path) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(1))
        .build();
    let url = format!("http://127.0.0.1:{admin_port}/health/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = agent
            .get(&url)
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
        if answer.is_some_and(|v| v["pid"] == pid) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} not ready after 30 s:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the unit's ExecStartPre, ExecStart and then its ExecReload lines as systemd would,
/// with the paths moved into a temporary directory and the site settings given as
/// /etc/caching-proxy/env would give them, while a client keeps sending requests: the new
/// binary takes the listeners over, the old process drains and exits, and no request fails.
#[test]
fn systemd_reload_hands_the_listeners_to_the_new_binary() {
    let unit = unit_file(&conf_dir().join("caching-proxy.service"));
    let service = &unit["Service"];
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().to_str().unwrap().to_owned();
    let run_dir = format!("/run/{}", one_value(service, "RuntimeDirectory"));
    let start = exec_words(one_value(service, "ExecStart"));
    let (binary, installed) = (start[0].clone(), config_arg(&start).unwrap().to_owned());
    let config = dir.path().join("caching-proxy.yaml");
    std::fs::copy(conf_dir().join("caching-proxy.yaml"), &config).unwrap();
    let local = |word: &str| {
        word.replace(&run_dir, &here)
            .replace(&installed, config.to_str().unwrap())
    };

    let origin = support::Origin::cacheable();
    let [port, admin_port] = free_ports::<2>();
    let mut env: Vec<(String, String)> = unit_env(service)
        .into_iter()
        .map(|(k, v)| (k, local(&v)))
        .collect();
    for (k, v) in [
        ("PROXY_HOST", "127.0.0.1".to_owned()),
        ("PROXY_PORT", port.to_string()),
        ("PROXY_ADMIN_PORT", admin_port.to_string()),
        ("PROXY_ORIGIN", origin.url()),
        ("PROXY_THREADS", "2".to_owned()),
        ("PROXY_GRACE_PERIOD", "1s".to_owned()),
        ("PROXY_SHUTDOWN_TIMEOUT", "1s".to_owned()),
    ] {
        env.push((k.to_owned(), v));
    }
    let pid_file = PathBuf::from(local(one_value(service, "PIDFile")));
    let log = dir.path().join("proxy.log");

    let exec = |line: &str, main_pid: Option<u32>| {
        let words = exec_words(line);
        let mut cmd = if words[0] == binary {
            let mut cmd = Command::new(BIN);
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
            cmd
        } else if words[0].ends_with("/kill") {
            Command::new("kill")
        } else {
            panic!("the test does not know how to run {line}")
        };
        for word in &words[1..] {
            if word == "$MAINPID" || word == "${MAINPID}" {
                cmd.arg(main_pid.expect("$MAINPID is set").to_string());
            } else {
                cmd.arg(local(word));
            }
        }
        // Files, not pipes: the daemon keeps its stdout and stderr.
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let status = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "`{line}` exited with {status}:\n{}",
            read(&log)
        );
    };

    let mut daemons = Daemons(Vec::new());
    for line in service.get("ExecStartPre").into_iter().flatten() {
        exec(line, None);
    }
    exec(one_value(service, "ExecStart"), None);
    let old = wait_pid(&pid_file, None, &log);
    daemons.0.push(old);
    wait_ready_pid(admin_port, old, &log);

    let stop = Arc::new(AtomicBool::new(false));
    let stop_client = StopOnDrop(stop.clone());
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // A new connection per request: each one is accepted by one process or the other.
            let agent = ureq::AgentBuilder::new()
                .max_idle_connections(0)
                .timeout(Duration::from_secs(5))
                .build();
            let mut failures = Vec::new();
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) {
                sent += 1;
                match agent
                    .get(&format!("http://127.0.0.1:{port}/page?{sent}"))
                    .call()
                {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!("request {sent}: {}", r.status())),
                    Err(e) => failures.push(format!("request {sent}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (sent, failures)
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    for line in &service["ExecReload"] {
        exec(line, Some(old));
    }
    let new = wait_pid(&pid_file, Some(old), &log);
    daemons.0.push(new);
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_running_proxy(old) {
        assert!(
            Instant::now() < deadline,
            "the old process {old} still runs 30 s after the reload:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_ready_pid(admin_port, new, &log);
    std::thread::sleep(Duration::from_millis(300));
    drop(stop_client);
    let (sent, failures) = client.join().unwrap();

    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed across the reload: {failures:?}\n{}",
        failures.len(),
        read(&log)
    );
    assert!(
        sent > 100,
        "the client kept sending during the reload: {sent}"
    );
    assert!(is_running_proxy(new), "the new process serves on");
}

// --- Makefile.toml -------------------------------------------------------------------------

/// Makefile.toml's tables: name -> key -> raw value. Values are single-line TOML strings,
/// booleans and arrays of strings, which read as JSON.
fn makefile() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut tables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut table = String::new();
    for line in read(&root().join("Makefile.toml")).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.trim().to_owned();
            assert!(
                tables.insert(table.clone(), BTreeMap::new()).is_none(),
                "[{table}] twice"
            );
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("Makefile.toml: not key = value: {line}"));
        tables
            .get_mut(&table)
            .unwrap_or_else(|| panic!("Makefile.toml: {line} outside a table"))
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    tables
}

/// The command lines a task runs: its dependencies' in order, then its own command. cargo-make's
/// `${@}` (extra arguments) is dropped.
fn task_commands(tables: &BTreeMap<String, BTreeMap<String, String>>, task: &str) -> Vec<String> {
    let t = tables
        .get(&format!("tasks.{task}"))
        .unwrap_or_else(|| panic!("Makefile.toml has no task {task:?}"));
    let list = |key: &str| -> Vec<String> {
        t.get(key).map_or_else(Vec::new, |raw| {
            serde_json::from_str(raw).unwrap_or_else(|e| {
                panic!("task {task}: {key} = {raw}: a one-line string array ({e})")
            })
        })
    };
    let mut commands: Vec<String> = list("dependencies")
        .iter()
        .flat_map(|dep| task_commands(tables, dep))
        .collect();
    if let Some(raw) = t.get("command") {
        let command: String = serde_json::from_str(raw).expect("command = \"...\"");
        let mut words = vec![command];
        words.extend(list("args").into_iter().filter(|a| a != "${@}"));
        commands.push(words.join(" "));
    }
    commands
}

#[test]
fn makefile_tasks_run_the_documented_commands() {
    let tables = makefile();
    assert_eq!(
        tables
            .get("config")
            .and_then(|c| c.get("default_to_workspace"))
            .map(String::as_str),
        Some("false"),
        "[config] default_to_workspace = false"
    );
    let commands = |task: &str| task_commands(&tables, task);

    let readme = read(&root().join("README.md"));
    assert!(
        readme.contains("\ncargo nextest run\n"),
        "the README's test command is `cargo nextest run`"
    );
    assert_eq!(
        commands("test"),
        ["cargo nextest run"],
        "test runs the README's command"
    );
    assert_eq!(
        commands("build"),
        ["cargo build --release --locked"],
        "build"
    );
    assert_eq!(
        commands("lint"),
        [
            "cargo fmt --check",
            "cargo clippy --all-targets -- -D warnings"
        ],
        "lint: format check, then clippy"
    );
    assert_eq!(commands("bench"), ["cargo bench"], "bench");
    assert_eq!(
        commands("docker"),
        ["docker build -t caching-proxy ."],
        "docker builds the image from the Dockerfile"
    );
    let run_dev = commands("run-dev");
    assert!(
        matches!(run_dev.as_slice(), [c] if c.starts_with("cargo run ")
            && c.contains(" --port 3000")
            && c.contains(" --origin http://localhost:9000")),
        "run-dev: cargo run on port 3000 in front of http://localhost:9000: {run_dev:?}"
    );
    let clear = commands("clear-cache");
    assert!(
        matches!(clear.as_slice(), [c] if c.starts_with("cargo run ") && c.ends_with(" --clear-cache")),
        "clear-cache runs the binary with --clear-cache: {clear:?}"
    );
    // cargo-make has built-in build, test and bench tasks; without `clear`, their attributes
    // would merge into ours.
    for task in ["build", "test", "bench"] {
        assert_eq!(
            tables[&format!("tasks.{task}")]
                .get("clear")
                .map(String::as_str),
            Some("true"),
            "task {task} sets clear = true"
        );
    }
}
