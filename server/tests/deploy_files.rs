//! Any operator: the deployment files parse, agree with each other and with
//! the server. Every YAML document under deploy/kubernetes/ is read with
//! PyYAML (python3: `pip install pyyaml`), the ConfigMap's and the systemd
//! unit's TOML are loaded by the real binary with `--print-config`, the unit
//! is checked with `systemd-analyze verify` (`apt-get install -y systemd`),
//! and the Dockerfile is read for what it must say. A missing tool fails the
//! test (with `LIVESLICE_ALLOW_SKIP=1` it skips and says so).

#[path = "common/require_tool.rs"]
mod require_tool;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use require_tool::{require_tool, runs};

const BIN: &str = env!("CARGO_BIN_EXE_liveslice-server");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("liveslice-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `liveslice-server --config FILE --print-config` with only the given
/// LIVESLICE_* variables set: the effective configuration.
fn print_config(toml: &str, name: &str, env: &[(&str, &str)]) -> String {
    let path = temp_file(name, toml);
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&path).arg("--print-config");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LIVESLICE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run liveslice-server");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "liveslice-server rejects {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// --- Kubernetes ---

/// Every YAML document in `dir` (deploy/kubernetes or one of its folders,
/// not recursing) as flat `path -> JSON scalar` maps, keyed by
/// `Kind/name`, or None when PyYAML is missing and `LIVESLICE_ALLOW_SKIP=1`
/// is set.
fn kubernetes_documents(dir: &str) -> Option<BTreeMap<String, BTreeMap<String, String>>> {
    const FLATTEN: &str = r#"
import json, os, sys, yaml
class Strict(yaml.SafeLoader):
    pass
def mapping(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    for k in keys:
        if keys.count(k) > 1:
            raise yaml.constructor.ConstructorError(None, None, "duplicate key %r" % k, node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)
Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
root = sys.argv[1]
for name in sorted(os.listdir(root)):
    if not name.endswith((".yaml", ".yml")):
        continue
    with open(os.path.join(root, name)) as f:
        docs = [d for d in yaml.load_all(f, Loader=Strict) if d is not None]
    if not docs:
        sys.exit("%s: no YAML documents" % name)
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            sys.exit("%s: a document without kind and apiVersion" % name)
        print("doc\t%s\t%s/%s" % (name, d["kind"], (d.get("metadata") or {}).get("name", "")))
        def walk(path, v):
            if isinstance(v, dict):
                for k, x in v.items():
                    walk(path + [str(k)], x)
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    walk(path + [str(i)], x)
            else:
                print("%s\t%s" % (".".join(path), json.dumps(v)))
        walk([], d)
"#;
    if !require_tool(
        "the Kubernetes YAML checks",
        "python3 with PyYAML",
        runs("python3", &["-c", "import yaml"]),
        "pip install pyyaml",
    ) {
        return None;
    }
    let out = Command::new("python3")
        .args(["-c", FLATTEN])
        .arg(repo().join(dir))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{dir} does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut docs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = String::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut f = line.splitn(3, '\t');
        match (f.next(), f.next(), f.next()) {
            (Some("doc"), Some(file), Some(id)) => {
                assert!(!docs.contains_key(id), "{id} twice ({file})");
                current = id.to_string();
                docs.entry(current.clone())
                    .or_default()
                    .insert("#file".into(), format!("\"{file}\""));
            }
            (Some(path), Some(value), None) => {
                docs.get_mut(&current)
                    .unwrap()
                    .insert(path.to_string(), value.to_string());
            }
            _ => panic!("bad line {line:?}"),
        }
    }
    Some(docs)
}

/// A JSON scalar as text: strings unescaped, others as written.
fn scalar(json: &str) -> String {
    let Some(inner) = json.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return json.to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().unwrap() {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => out.push(other),
        }
    }
    out
}

struct Doc<'a>(&'a str, &'a BTreeMap<String, String>);

impl Doc<'_> {
    fn get(&self, path: &str) -> String {
        self.opt(path)
            .unwrap_or_else(|| panic!("{}: no {path}", self.0))
    }
    fn opt(&self, path: &str) -> Option<String> {
        self.1.get(path).map(|v| scalar(v))
    }
    /// The list at `path`: its element count.
    fn len(&self, path: &str) -> usize {
        (0..)
            .take_while(|i| {
                let p = format!("{path}.{i}");
                self.1
                    .keys()
                    .any(|k| *k == p || k.starts_with(&format!("{p}.")))
            })
            .count()
    }
}

/// "1280Mi", "1Gi", "512M" in bytes.
fn quantity(q: &str) -> u64 {
    let (n, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    n.parse::<u64>()
        .unwrap_or_else(|_| panic!("quantity {q:?}"))
        * mult
}

/// kustomization.yaml names every other file of its folder.
fn kustomization_lists_every_file(docs: &BTreeMap<String, BTreeMap<String, String>>, kust: &Doc) {
    let mut resources: Vec<String> = (0..kust.len("resources"))
        .map(|i| kust.get(&format!("resources.{i}")))
        .collect();
    resources.sort();
    let mut files: Vec<String> = docs
        .values()
        .map(|m| scalar(&m["#file"]))
        .filter(|f| f != "kustomization.yaml")
        .collect();
    files.sort();
    files.dedup();
    assert_eq!(resources, files, "kustomization.yaml resources");
}

#[test]
fn kubernetes_manifests_parse_and_agree() {
    let Some(docs) = kubernetes_documents("deploy/kubernetes") else {
        return;
    };
    let doc = |kind: &str| {
        let (id, map) = docs
            .iter()
            .find(|(id, _)| id.starts_with(&format!("{kind}/")))
            .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes (have {:?})", docs.keys()));
        Doc(id, map)
    };

    kustomization_lists_every_file(&docs, &doc("Kustomization"));

    let cm = doc("ConfigMap");
    let dep = doc("Deployment");
    let svc = doc("Service");
    assert_eq!(dep.get("apiVersion"), "apps/v1");

    // The image is the one the README and the Dockerfile build.
    let image = dep.get("spec.template.spec.containers.0.image");
    let build = format!("docker build -t {image} .");
    assert!(
        read("README.md").contains(&format!("`{build}`")),
        "README does not build {image} (`{build}`)"
    );
    assert!(
        read("Dockerfile").contains(&build),
        "the Dockerfile's header does not build {image}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        image.ends_with(&format!(":{version}")),
        "{image}: tag the crate version {version}"
    );

    // Labels: the selector picks the pod template, the Service the pods.
    let label = "app.kubernetes.io/name";
    let app = dep.get(&format!("spec.template.metadata.labels.{label}"));
    assert_eq!(dep.get(&format!("spec.selector.matchLabels.{label}")), app);
    assert_eq!(svc.get(&format!("spec.selector.{label}")), app);

    let c = "spec.template.spec.containers.0";
    assert_eq!(dep.len("spec.template.spec.containers"), 1);
    // The ConfigMap is mounted and passed as --config.
    assert_eq!(dep.get(&format!("{c}.args.0")), "--config");
    let config_path = dep.get(&format!("{c}.args.1"));
    let mount = dep.get(&format!("{c}.volumeMounts.0.mountPath"));
    let key = config_path
        .strip_prefix(&format!("{mount}/"))
        .unwrap_or_else(|| panic!("{config_path} is not under the mount {mount}"));
    let volume = dep.get(&format!("{c}.volumeMounts.0.name"));
    assert_eq!(dep.get("spec.template.spec.volumes.0.name"), volume);
    assert_eq!(
        dep.get("spec.template.spec.volumes.0.configMap.name"),
        cm.0.split_once('/').unwrap().1
    );
    let toml = cm.get(&format!("data.{key}"));

    // Listening on every interface, through the environment.
    let env: Vec<(String, String)> = (0..dep.len(&format!("{c}.env")))
        .filter_map(|i| {
            let value = dep.opt(&format!("{c}.env.{i}.value"))?;
            Some((dep.get(&format!("{c}.env.{i}.name")), value))
        })
        .collect();
    let env_of = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(env_of("LIVESLICE_GRPC_ADDR"), Some("0.0.0.0:50051"));
    assert_eq!(env_of("LIVESLICE_HTTP_ADDR"), Some("0.0.0.0:8080"));

    // The server accepts the ConfigMap's TOML as the pod would see it.
    let liveslice_env: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("LIVESLICE_"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let effective = print_config(&toml, "configmap.toml", &liveslice_env);
    assert!(
        effective.contains("grpc-addr = \"0.0.0.0:50051\""),
        "{effective}"
    );
    assert!(
        effective.contains("http-addr = \"0.0.0.0:8080\""),
        "{effective}"
    );
    let setting = |k: &str| -> String {
        effective
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("no {k} in {effective}"))
            .trim_matches('"')
            .to_string()
    };
    // Sessions' rings fit in the memory limit.
    let limit = quantity(&dep.get(&format!("{c}.resources.limits.memory")));
    let rings: u64 = setting("max-sessions").parse::<u64>().unwrap()
        * setting("ring-bytes").parse::<u64>().unwrap();
    assert!(
        rings < limit,
        "max-sessions * ring-bytes = {rings} > limit {limit}"
    );
    // Shutdown finishes within the pod's grace period.
    let shutdown_ms: u64 = setting("shutdown-timeout")
        .trim_end_matches("ms")
        .parse()
        .unwrap();
    let grace: u64 = dep
        .get("spec.template.spec.terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert!(shutdown_ms < grace * 1000);

    // Native gRPC probes on the service the health server reports.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            dep.get(&format!("{c}.{probe}.grpc.port")),
            "50051",
            "{probe}"
        );
        assert_eq!(
            dep.get(&format!("{c}.{probe}.grpc.service")),
            "liveslice.v1.SliceService",
            "{probe}"
        );
    }
    for r in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            dep.get(&format!("{c}.resources.{r}.{what}"));
        }
    }
    assert_eq!(
        dep.get("spec.template.spec.securityContext.runAsNonRoot"),
        "true"
    );
    assert_ne!(dep.get("spec.template.spec.securityContext.runAsUser"), "0");
    assert_eq!(
        dep.get(&format!("{c}.securityContext.allowPrivilegeEscalation")),
        "false"
    );

    // The Service's ports reach the container's named ports.
    let container_ports: Vec<(String, String)> = (0..dep.len(&format!("{c}.ports")))
        .map(|i| {
            (
                dep.get(&format!("{c}.ports.{i}.name")),
                dep.get(&format!("{c}.ports.{i}.containerPort")),
            )
        })
        .collect();
    let mut service_ports = Vec::new();
    for i in 0..svc.len("spec.ports") {
        let target = svc.get(&format!("spec.ports.{i}.targetPort"));
        let (_, number) = container_ports
            .iter()
            .find(|(name, number)| *name == target || *number == target)
            .unwrap_or_else(|| panic!("Service targetPort {target} is no container port"));
        service_ports.push(number.clone());
    }
    service_ports.sort();
    assert_eq!(service_ports, ["50051", "8080"]);
}

/// deploy/kubernetes/cluster/: NATS with JetStream (StatefulSet and
/// Service), origin and edge Deployments with their Services, and a
/// HorizontalPodAutoscaler on the edges. Checked: kustomization lists every
/// file; each liveslice Deployment's environment (the node id from the
/// pod's name) is a configuration the server accepts in the role its name
/// says, on the NATS Service's client port; each Service selects its own
/// Deployment's pods only and reaches named container ports; the
/// autoscaler scales the edge Deployment on CPU, which the edges request.
#[test]
fn kubernetes_cluster_manifests_run_a_cluster_the_server_accepts() {
    let Some(docs) = kubernetes_documents("deploy/kubernetes/cluster") else {
        return;
    };
    let doc = |id: &str| {
        let (id, map) = docs.get_key_value(id).unwrap_or_else(|| {
            panic!(
                "no {id} in deploy/kubernetes/cluster (have {:?})",
                docs.keys()
            )
        });
        Doc(id, map)
    };
    kustomization_lists_every_file(&docs, &doc("Kustomization/"));

    // NATS: JetStream on, its store on a volume claim, the Service's client
    // port reaching the container's.
    let nats = doc("StatefulSet/nats");
    let nats_c = "spec.template.spec.containers.0";
    let args: Vec<String> = (0..nats.len(&format!("{nats_c}.args")))
        .map(|i| nats.get(&format!("{nats_c}.args.{i}")))
        .collect();
    assert!(
        args.contains(&"-js".to_string()),
        "NATS without JetStream: {args:?}"
    );
    let store = args
        .iter()
        .position(|a| a == "-sd")
        .map(|i| args[i + 1].clone())
        .expect("a JetStream store directory (-sd)");
    assert_eq!(
        nats.get(&format!("{nats_c}.volumeMounts.0.mountPath")),
        store
    );
    assert_eq!(
        nats.get(&format!("{nats_c}.volumeMounts.0.name")),
        nats.get("spec.volumeClaimTemplates.0.metadata.name")
    );
    let nats_svc = doc("Service/nats");
    let client_port = (0..nats_svc.len("spec.ports"))
        .find(|i| nats_svc.get(&format!("spec.ports.{i}.name")) == "client")
        .map(|i| nats_svc.get(&format!("spec.ports.{i}.port")))
        .expect("a client port on the nats Service");
    let nats_url = format!("nats://nats:{client_port}");
    assert_eq!(
        nats_svc.get("spec.selector.app.kubernetes.io/name"),
        nats.get("spec.template.metadata.labels.app.kubernetes.io/name")
    );

    let version = env!("CARGO_PKG_VERSION");
    let image = format!("liveslice-server:{version}");
    let c = "spec.template.spec.containers.0";
    for role in ["origin", "edge"] {
        let dep = doc(&format!("Deployment/liveslice-{role}"));
        let svc = doc(&format!("Service/liveslice-{role}"));
        assert_eq!(dep.get(&format!("{c}.image")), image, "{role}");
        // The pod's environment, the node id as the pod's name would be.
        let env: Vec<(String, String)> = (0..dep.len(&format!("{c}.env")))
            .map(|i| {
                let name = dep.get(&format!("{c}.env.{i}.name"));
                let value = match dep.opt(&format!("{c}.env.{i}.value")) {
                    Some(v) => v,
                    None => {
                        assert_eq!(
                            dep.get(&format!("{c}.env.{i}.valueFrom.fieldRef.fieldPath")),
                            "metadata.name",
                            "{role}: {name}"
                        );
                        format!("liveslice-{role}-7d9f-abcde")
                    }
                };
                (name, value)
            })
            .collect();
        let liveslice_env: Vec<(&str, &str)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("LIVESLICE_"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let printed = print_config("", &format!("{role}.toml"), &liveslice_env);
        for want in [
            format!("cluster = \"{nats_url}\""),
            format!("role = \"{role}\""),
            format!("node-id = \"liveslice-{role}-7d9f-abcde\""),
            "grpc-addr = \"0.0.0.0:50051\"".to_string(),
            "http-addr = \"0.0.0.0:8080\"".to_string(),
        ] {
            assert!(printed.contains(&want), "{role}: no {want} in\n{printed}");
        }
        // Sessions' rings fit in the memory limit (an edge holds them all).
        let setting = |k: &str| -> u64 {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .unwrap_or_else(|| panic!("no {k} in {printed}"))
                .trim_matches('"')
                .parse()
                .unwrap()
        };
        let limit = quantity(&dep.get(&format!("{c}.resources.limits.memory")));
        assert!(
            setting("max-sessions") * setting("ring-bytes") < limit,
            "{role}: max-sessions * ring-bytes above the memory limit {limit}"
        );
        assert!(
            setting("memory-limit") < limit,
            "{role}: the server's memory-limit above the container's {limit}"
        );
        // The Service selects this Deployment's pods and no other's.
        let labels = |d: &Doc, prefix: &str| -> BTreeMap<String, String> {
            d.1.iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), scalar(v))))
                .collect()
        };
        let pods = labels(&dep, "spec.template.metadata.labels.");
        let selector = labels(&svc, "spec.selector.");
        assert_eq!(
            labels(&dep, "spec.selector.matchLabels."),
            selector,
            "{role}"
        );
        assert!(
            selector.iter().all(|(k, v)| pods.get(k) == Some(v)),
            "{role}"
        );
        let other = if role == "origin" { "edge" } else { "origin" };
        let other_pods = labels(
            &doc(&format!("Deployment/liveslice-{other}")),
            "spec.template.metadata.labels.",
        );
        assert!(
            !selector.iter().all(|(k, v)| other_pods.get(k) == Some(v)),
            "Service/liveslice-{role} also selects the {other} pods"
        );
        let container_ports: Vec<String> = (0..dep.len(&format!("{c}.ports")))
            .map(|i| dep.get(&format!("{c}.ports.{i}.name")))
            .collect();
        for i in 0..svc.len("spec.ports") {
            let target = svc.get(&format!("spec.ports.{i}.targetPort"));
            assert!(container_ports.contains(&target), "{role}: {target}");
        }
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(
                dep.get(&format!("{c}.{probe}.grpc.port")),
                "50051",
                "{role} {probe}"
            );
        }
        assert_eq!(
            dep.get("spec.template.spec.securityContext.runAsNonRoot"),
            "true"
        );
    }
    // Two origins for publishers; the edges' count is the autoscaler's.
    let origin = doc("Deployment/liveslice-origin");
    assert!(origin.get("spec.replicas").parse::<u32>().unwrap() >= 2);
    let edge = doc("Deployment/liveslice-edge");
    assert_eq!(
        edge.opt("spec.replicas"),
        None,
        "the autoscaler sets the edges' replicas"
    );
    let hpa = doc("HorizontalPodAutoscaler/liveslice-edge");
    assert_eq!(hpa.get("apiVersion"), "autoscaling/v2");
    assert_eq!(hpa.get("spec.scaleTargetRef.kind"), "Deployment");
    assert_eq!(hpa.get("spec.scaleTargetRef.name"), "liveslice-edge");
    let min: u32 = hpa.get("spec.minReplicas").parse().unwrap();
    let max: u32 = hpa.get("spec.maxReplicas").parse().unwrap();
    assert!(min >= 2 && max > min, "{min}..{max}");
    assert_eq!(hpa.get("spec.metrics.0.resource.name"), "cpu");
    assert!(
        !edge.get(&format!("{c}.resources.requests.cpu")).is_empty(),
        "the edges request CPU (what utilization is measured against)"
    );
}

/// deploy/kubernetes/batch/: an Indexed Job packaging the files a
/// ConfigMap lists (one pod per line, by JOB_COMPLETION_INDEX), and job
/// workers scaled by KEDA on the job queue. Checked: kustomization lists
/// every file; the Job is Indexed with one completion per listed file and
/// reads the list where the ConfigMap is mounted, with a writable work
/// directory; the workers' environment is a configuration the server
/// accepts as a worker of the cluster's NATS, working in a mounted
/// directory; the scaler targets the workers and watches the queue the
/// server uses (its stream and consumer names) on the NATS monitoring port.
/// (client/tests/jobs.rs runs the Job's script for each index.)
#[test]
fn kubernetes_batch_manifests_package_files_and_scale_workers() {
    let Some(docs) = kubernetes_documents("deploy/kubernetes/batch") else {
        return;
    };
    let Some(cluster) = kubernetes_documents("deploy/kubernetes/cluster") else {
        return;
    };
    let doc = |id: &str| {
        let (id, map) = docs.get_key_value(id).unwrap_or_else(|| {
            panic!(
                "no {id} in deploy/kubernetes/batch (have {:?})",
                docs.keys()
            )
        });
        Doc(id, map)
    };
    kustomization_lists_every_file(&docs, &doc("Kustomization/"));
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("liveslice-server:{version}");
    let c = "spec.template.spec.containers.0";

    // The Indexed Job and its list.
    let files = doc("ConfigMap/liveslice-batch-files").get("data.files.txt");
    let listed: Vec<&str> = files.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!listed.is_empty());
    for f in &listed {
        assert!(f.starts_with("s3://"), "{f}: a URL the pods can read");
    }
    let job = doc("Job/liveslice-package");
    assert_eq!(job.get("apiVersion"), "batch/v1");
    assert_eq!(job.get("spec.completionMode"), "Indexed");
    let completions: usize = job.get("spec.completions").parse().unwrap();
    assert_eq!(completions, listed.len(), "one completion per listed file");
    let parallelism: usize = job.get("spec.parallelism").parse().unwrap();
    assert!((1..=completions).contains(&parallelism), "{parallelism}");
    assert_eq!(job.get("spec.template.spec.restartPolicy"), "Never");
    assert_eq!(job.get(&format!("{c}.image")), image);
    let script = job.get(&format!("{c}.args.0"));
    assert!(script.contains("JOB_COMPLETION_INDEX"), "{script}");
    assert!(script.contains("liveslice package"), "{script}");
    let mounts = |d: &Doc| -> BTreeMap<String, String> {
        (0..d.len(&format!("{c}.volumeMounts")))
            .map(|i| {
                (
                    d.get(&format!("{c}.volumeMounts.{i}.name")),
                    d.get(&format!("{c}.volumeMounts.{i}.mountPath")),
                )
            })
            .collect()
    };
    let volumes = |d: &Doc| -> BTreeMap<String, String> {
        (0..d.len("spec.template.spec.volumes"))
            .map(|i| {
                let v = format!("spec.template.spec.volumes.{i}");
                let kind = if d.opt(&format!("{v}.configMap.name")).is_some() {
                    format!("configMap:{}", d.get(&format!("{v}.configMap.name")))
                } else if d.1.keys().any(|k| k.starts_with(&format!("{v}.emptyDir"))) {
                    "emptyDir".to_string()
                } else {
                    "other".to_string()
                };
                (d.get(&format!("{v}.name")), kind)
            })
            .collect()
    };
    let job_mounts = mounts(&job);
    let job_volumes = volumes(&job);
    let list_mount = job_volumes
        .iter()
        .find(|(_, k)| *k == "configMap:liveslice-batch-files")
        .map(|(n, _)| job_mounts[n].clone())
        .expect("the list's ConfigMap mounted");
    assert!(
        script.contains(&format!("{list_mount}/files.txt")),
        "{script}"
    );
    let env = |d: &Doc| -> BTreeMap<String, String> {
        (0..d.len(&format!("{c}.env")))
            .map(|i| {
                let name = d.get(&format!("{c}.env.{i}.name"));
                let value = d.opt(&format!("{c}.env.{i}.value")).unwrap_or_else(|| {
                    assert_eq!(
                        d.get(&format!("{c}.env.{i}.valueFrom.fieldRef.fieldPath")),
                        "metadata.name"
                    );
                    "liveslice-worker-7d9f-abcde".into()
                });
                (name, value)
            })
            .collect()
    };
    let job_env = env(&job);
    let tmp = &job_env["TMPDIR"];
    assert!(
        job_mounts
            .iter()
            .any(|(n, p)| p == tmp && job_volumes[n] == "emptyDir"),
        "TMPDIR {tmp} is a writable volume (the root file system is read-only)"
    );
    assert!(job_env["OUTPUT"].starts_with("s3://"));

    // The workers: a configuration the server accepts, as a worker.
    let nats_svc = Doc("Service/nats", &cluster["Service/nats"]);
    let port_named = |name: &str| {
        (0..nats_svc.len("spec.ports"))
            .find(|i| nats_svc.get(&format!("spec.ports.{i}.name")) == name)
            .map(|i| nats_svc.get(&format!("spec.ports.{i}.port")))
            .unwrap_or_else(|| panic!("a {name} port on the nats Service"))
    };
    let worker = doc("Deployment/liveslice-worker");
    assert_eq!(worker.get(&format!("{c}.image")), image);
    let worker_env = env(&worker);
    let liveslice_env: Vec<(&str, &str)> = worker_env
        .iter()
        .filter(|(k, _)| k.starts_with("LIVESLICE_"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let printed = print_config("", "worker.toml", &liveslice_env);
    let work_dir = &worker_env["LIVESLICE_JOB_WORK_DIR"];
    for want in [
        "worker = true".to_string(),
        format!("cluster = \"nats://nats:{}\"", port_named("client")),
        format!("job-work-dir = \"{work_dir}\""),
        "node-id = \"liveslice-worker-7d9f-abcde\"".to_string(),
    ] {
        assert!(printed.contains(&want), "no {want} in\n{printed}");
    }
    let worker_mounts = mounts(&worker);
    let worker_volumes = volumes(&worker);
    assert!(
        worker_mounts
            .iter()
            .any(|(n, p)| p == work_dir && worker_volumes[n] == "emptyDir"),
        "the work directory {work_dir} is a writable volume"
    );
    assert_eq!(
        worker.opt("spec.replicas"),
        None,
        "KEDA sets the workers' replicas"
    );

    // KEDA: the workers, on the queue the server uses.
    let scaler = doc("ScaledObject/liveslice-worker");
    assert_eq!(scaler.get("apiVersion"), "keda.sh/v1alpha1");
    assert_eq!(scaler.get("spec.scaleTargetRef.name"), "liveslice-worker");
    let t = "spec.triggers.0";
    assert_eq!(scaler.get(&format!("{t}.type")), "nats-jetstream");
    assert_eq!(
        scaler.get(&format!("{t}.metadata.stream")),
        liveslice_server::jobs::JOBS_STREAM
    );
    assert_eq!(
        scaler.get(&format!("{t}.metadata.consumer")),
        liveslice_server::jobs::WORKERS
    );
    let monitor = scaler.get(&format!("{t}.metadata.natsServerMonitoringEndpoint"));
    assert!(
        monitor.starts_with("nats.") && monitor.ends_with(&format!(":{}", port_named("monitor"))),
        "{monitor}"
    );
    let min: u32 = scaler.get("spec.minReplicaCount").parse().unwrap();
    let max: u32 = scaler.get("spec.maxReplicaCount").parse().unwrap();
    assert!(max > min, "{min}..{max}");
}

// --- systemd ---

/// `[Section]` -> `Key` -> values (keys may repeat).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            out.entry(name.to_string()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line:?}", n + 1));
        let s = section
            .as_ref()
            .unwrap_or_else(|| panic!("line {}: key outside a section", n + 1));
        out.get_mut(s)
            .unwrap()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

#[test]
fn systemd_unit_has_what_it_must() {
    let text = read("deploy/systemd/liveslice.service");
    let unit = parse_unit(&text);
    let one = |section: &str, key: &str| -> String {
        let v = unit
            .get(section)
            .unwrap_or_else(|| panic!("no [{section}]"))
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in [{section}]"));
        v.last().unwrap().clone()
    };
    assert!(!one("Unit", "Description").is_empty());
    assert_eq!(
        one("Service", "ExecStart"),
        "/usr/local/bin/liveslice-server --config /etc/liveslice/liveslice.toml"
    );
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(one("Service", key), value, "[Service] {key}");
    }
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");

    // The config file it names (shipped beside it) loads.
    let effective = print_config(&read("deploy/systemd/liveslice.toml"), "systemd.toml", &[]);
    assert!(
        effective.contains("grpc-addr = \"0.0.0.0:50051\""),
        "{effective}"
    );

    // systemd's own check, on a copy whose ExecStart is the built binary
    // (verify insists the executable exists). It reports unknown keys and
    // bad values on stderr without failing, so any line about the unit fails.
    if !require_tool(
        "systemd-analyze verify of the unit",
        "systemd-analyze",
        runs("systemd-analyze", &["--version"]),
        "apt-get install -y systemd",
    ) {
        return;
    }
    let copy = temp_file(
        "liveslice.service",
        &text.replace("/usr/local/bin/liveslice-server", BIN),
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_file(&copy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("liveslice.service"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

// --- Docker ---

#[test]
fn dockerfile_builds_the_server_and_runs_it_unprivileged() {
    let text = read("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(
        froms[0].starts_with("FROM rust:1-bookworm AS "),
        "{}",
        froms[0]
    );
    assert_eq!(froms[1], "FROM debian:bookworm-slim");
    assert!(text.contains("cargo build --release --locked -p liveslice-server -p liveslice"));
    // Both binaries reach the final image.
    for bin in ["liveslice-server", "liveslice"] {
        assert!(
            text.contains(&format!(
                "install -m 0755 target/release/{bin} /usr/local/bin/{bin}"
            )),
            "{bin} is not installed in the build stage"
        );
        assert!(
            lines.contains(
                &format!("COPY --from=build /usr/local/bin/{bin} /usr/local/bin/{bin}").as_str()
            ),
            "{bin} is not copied into the image"
        );
    }
    assert!(lines.contains(&"EXPOSE 50051 8080"));
    // HTTPS to object storage verifies against the system's roots.
    assert!(text.contains("ca-certificates"), "no CA roots in the image");
    assert!(text.contains("LIVESLICE_GRPC_ADDR=0.0.0.0:50051"));
    assert!(text.contains("LIVESLICE_HTTP_ADDR=0.0.0.0:8080"));
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "runs as {user}"
    );
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/liveslice-server\"]"));
    // Only sources go into the context (and what the build reads is there).
    let ignore = read(".dockerignore");
    for pattern in [".git", "target"] {
        assert!(
            ignore.lines().any(|l| l.trim() == pattern),
            ".dockerignore {pattern}"
        );
    }
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "server/Cargo.toml",
        "files/Cargo.toml",
        "proto",
        "testdata",
    ] {
        assert!(repo().join(path).exists(), "{path}");
    }
}

// --- Compose ---

/// deploy/compose/compose.yaml: NATS with JetStream, two origins and two
/// edges of the image the README builds; each liveslice service's
/// environment is a configuration the server accepts, in the role its name
/// says, on the cluster the NATS service is; the host ports do not collide.
#[test]
fn compose_file_runs_a_cluster_the_server_accepts() {
    const FLATTEN: &str = r#"
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for name, svc in sorted(doc["services"].items()):
    print("service\t%s" % name)
    def walk(path, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(path + [str(k)], x)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(path + [str(i)], x)
        else:
            print("%s\t%s" % (".".join(path), json.dumps(v)))
    walk([], svc)
"#;
    if !require_tool(
        "the Compose file check",
        "python3 with PyYAML",
        runs("python3", &["-c", "import yaml"]),
        "pip install pyyaml",
    ) {
        return;
    }
    let out = Command::new("python3")
        .args(["-c", FLATTEN])
        .arg(repo().join("deploy/compose/compose.yaml"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "deploy/compose/compose.yaml does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut services: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = String::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (k, v) = line.split_once('\t').expect("path\tvalue");
        if k == "service" {
            current = v.to_string();
            services.entry(current.clone()).or_default();
        } else {
            let v = serde_json::from_str::<serde_json::Value>(v)
                .map(|j| match j {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .unwrap_or_default();
            services
                .get_mut(&current)
                .expect("a service")
                .insert(k.to_string(), v);
        }
    }
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, ["edge-1", "edge-2", "nats", "origin-1", "origin-2"]);

    let nats = &services["nats"];
    let command: Vec<&str> = (0..)
        .map_while(|i| nats.get(&format!("command.{i}")).map(String::as_str))
        .collect();
    assert!(
        command.contains(&"-js"),
        "NATS without JetStream: {command:?}"
    );

    let version = env!("CARGO_PKG_VERSION");
    let image = format!("liveslice-server:{version}");
    assert!(
        read("README.md").contains(&format!("`docker build -t {image} .`")),
        "README does not build {image}"
    );
    let mut host_ports = Vec::new();
    for (name, svc) in &services {
        for (k, v) in svc {
            if k.starts_with("ports.") {
                host_ports.push(v.split(':').next().unwrap_or_default().to_string());
            }
        }
        if name == "nats" {
            continue;
        }
        assert_eq!(svc["image"], image, "{name}");
        let env: Vec<(&str, &str)> = svc
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("environment.")?, v.as_str())))
            .collect();
        let printed = print_config("", &format!("{name}.toml"), &env);
        assert!(
            printed.contains("cluster = \"nats://nats:4222\""),
            "{name}: {printed}"
        );
        let role = if name.starts_with("edge") {
            "edge"
        } else {
            "origin"
        };
        assert!(
            printed.contains(&format!("role = \"{role}\"")),
            "{name}: {printed}"
        );
        assert!(
            printed.contains(&format!("node-id = \"{name}\"")),
            "{name}: {printed}"
        );
    }
    let count = host_ports.len();
    host_ports.sort();
    host_ports.dedup();
    assert_eq!(host_ports.len(), count, "host ports collide");
    assert_eq!(count, 8, "two ports (gRPC, HTTP) per liveslice service");
}
