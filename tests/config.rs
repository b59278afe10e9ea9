//! Configuration through the real binary: precedence (flag > env > file > default),
//! validation errors, and every shipped file in `conf/`.

mod support;

use std::path::Path;

use support::proxy::{conf_dir, free_ports, listens, run};
use support::{free_port, get, Origin, ProxyBuilder};

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The listen port is set in all three places; the proxy must listen where the highest
/// layer says, which the test observes by connecting.
#[test]
fn flag_beats_env_beats_file() {
    let origin = Origin::cacheable();
    let dir = tempfile::tempdir().unwrap();
    let [file_port, env_port, flag_port] = free_ports::<3>();
    let conf = write_config(
        dir.path(),
        &format!("listen:\n  port: {file_port}\ncache:\n  default_ttl: 1m\n"),
    );

    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", &conf, "--port", &flag_port.to_string()])
        .env("PROXY_PORT", &env_port.to_string())
        .without_port_flag()
        .start();
    assert!(listens(flag_port) && !listens(env_port) && !listens(file_port));
    drop(proxy);

    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", &conf])
        .env("PROXY_PORT", &env_port.to_string())
        .without_port_flag()
        .start();
    assert!(listens(env_port) && !listens(file_port));
    drop(proxy);

    let _proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", &conf])
        .without_port_flag()
        .start();
    assert!(listens(file_port));
    assert_eq!(get(&format!("http://127.0.0.1:{file_port}/x")).status, 200);
}

#[test]
fn config_file_path_from_env() {
    let origin = Origin::cacheable();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = write_config(dir.path(), &format!("listen:\n  port: {port}\n"));
    let proxy = ProxyBuilder::new(&origin.url())
        .env("PROXY_CONFIG", &conf)
        .without_port_flag()
        .start();
    assert_eq!(get(&format!("http://127.0.0.1:{port}/x")).status, 200);
    drop(proxy);
}

fn assert_rejected(args: &[&str], envs: &[(&str, &str)], expected: &str) {
    let out = run(args, envs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} {envs:?}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?} {envs:?}: expected {expected:?} in {stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "one message: {stderr:?}");
}

#[test]
fn invalid_values_exit_non_zero_naming_the_field() {
    let origin = ["--origin", "http://127.0.0.1:9"];
    fn with<'a>(origin: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = origin.to_vec();
        v.extend_from_slice(extra);
        v
    }
    assert_rejected(
        &with(&origin, &["--cache-max-bytes", "12XB", "-t"]),
        &[],
        r#"cache.max_size: "12XB" is not a size (examples: 512MiB, 2GiB) (from flag --cache-max-bytes)"#,
    );
    assert_rejected(
        &with(&origin, &["-t"]),
        &[("PROXY_CACHE_TTL", "forever")],
        r#"cache.default_ttl: "forever" is not a duration"#,
    );
    assert_rejected(
        &with(&origin, &["-t"]),
        &[("PROXY_CACHE_TTL", "forever")],
        "(from env PROXY_CACHE_TTL)",
    );
    assert_rejected(
        &with(&origin, &["--port", "0", "-t"]),
        &[],
        r#"listen.port: "0" is not a port"#,
    );
    assert_rejected(
        &with(&origin, &["--cache-size=-3", "-t"]),
        &[],
        r#"cache.max_entries: "-3""#,
    );
    assert_rejected(&["-t"], &[], "upstream.origin is required");
    assert_rejected(
        &["--origin", "localhost:9000", "-t"],
        &[],
        "upstream.origin: \"localhost:9000\" must start with http:// or https://",
    );
    assert_rejected(
        &with(&origin, &["--admin-port", "3000", "-t"]),
        &[],
        "admin.port: 3000 is also the proxy's listen.port",
    );

    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), "cache:\n  max_size: 12XB\n");
    assert_rejected(
        &with(&origin, &["-c", &conf, "-t"]),
        &[],
        &format!(
            "cache.max_size: \"12XB\" is not a size (examples: 512MiB, 2GiB) (from file {conf})"
        ),
    );
    let conf = write_config(dir.path(), "cache:\n  max_sise: 1GiB\n");
    assert_rejected(
        &with(&origin, &["-c", &conf, "-t"]),
        &[],
        "unknown setting \"cache.max_sise\"",
    );
    let conf = write_config(dir.path(), "cache: [unclosed\n");
    assert_rejected(&with(&origin, &["-c", &conf, "-t"]), &[], "is not valid");
    assert_rejected(
        &with(&origin, &["-c", "/nonexistent/proxy.yaml", "-t"]),
        &[],
        "cannot read config file /nonexistent/proxy.yaml",
    );
}

#[test]
fn invalid_config_never_listens() {
    let port = free_port();
    let out = run(
        &[
            "--origin",
            "http://127.0.0.1:9",
            "--port",
            &port.to_string(),
            "--timeout",
            "soon",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "nothing listened"
    );
}

#[test]
fn unknown_flags_are_usage_errors() {
    let out = run(&["--no-such-flag"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn every_file_in_conf_loads() {
    let mut checked = 0;
    for entry in std::fs::read_dir(conf_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let out = run(&["-t", "-c", path.to_str().unwrap()], &[]);
            assert!(out.status.success(), "{}: {out:?}", path.display());
            assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
            checked += 1;
        }
    }
    assert!(checked >= 1, "conf/ has at least the example config");
}

#[test]
fn example_config_runs() {
    let origin = Origin::cacheable();
    let conf = conf_dir().join("caching-proxy.yaml");
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", conf.to_str().unwrap()])
        .start();
    assert_eq!(get(&proxy.url("/x")).x_cache(), "MISS");
    assert_eq!(get(&proxy.url("/x")).x_cache(), "HIT");
}
