//! The configs shipped in `deploy/k8s/configmap.yaml` pass `switchyard validate` as the
//! pods would run them: listening on 0.0.0.0 with tokens from the environment.

use switchyard_test_support::switchyard_command;

/// The text of each `name: |` block of the ConfigMap, without its indentation.
fn configs(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("  ")
            .and_then(|l| l.strip_suffix(": |"))
            .filter(|n| n.ends_with(".toml"))
        else {
            continue;
        };
        let mut text = String::new();
        while let Some(next) = lines.peek() {
            if next.is_empty() || next.starts_with("    ") {
                text.push_str(next.get(4..).unwrap_or(""));
                text.push('\n');
                lines.next();
            } else {
                break;
            }
        }
        out.push((name.to_owned(), text));
    }
    out
}

#[test]
fn deploy_k8s_configs_pass_validate_with_the_secrets_set() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let yaml = std::fs::read_to_string(root.join("deploy/k8s/configmap.yaml"))
        .expect("reading deploy/k8s/configmap.yaml");
    let found = configs(&yaml);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["cdc.toml", "ingest.toml"],
        "configs in the ConfigMap"
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    // The CA file the CDC config names is mounted from a Secret in the pod.
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "").expect("writing a stand-in CA file");
    for (name, text) in found {
        assert!(
            text.contains("listen = \"0.0.0.0:8080\""),
            "{name} listens on 0.0.0.0"
        );
        assert!(text.contains("format = \"json\""), "{name} logs JSON");
        let text = text.replace("/etc/switchyard/pg-ca/ca.crt", &ca.display().to_string());
        let path = dir.path().join(&name);
        std::fs::write(&path, text).expect("writing the config");
        let out = switchyard_command()
            .args(["validate", "-c"])
            .arg(&path)
            .env("SWITCHYARD_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")
            .env("METRICS_TOKEN", "fedcba9876543210fedcba9876543210")
            .env("INGEST_TOKEN", "00112233445566778899aabbccddeeff")
            .env("PG_PASSWORD", "secret")
            .env("KAFKA_PASSWORD", "secret")
            .env("KAFKA_BROKERS", "kafka-0:9093,kafka-1:9093")
            .output()
            .expect("running switchyard validate");
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
