//! The shipped Kubernetes examples and Dockerfile say what the docs and apply.md §7 say: the
//! init containers carry Istio's injected argument lists, which this binary accepts, and the
//! image's entrypoint is the binary.

use std::path::Path;
use std::process::Command;

use crate::sidecar_argv::sidecar_argv_with;

/// apply.md §7.1: the default sidecar's `istio-init` arguments (after the image entrypoint).
fn istio_init_args() -> Vec<&'static str> {
    let mut args = vec!["istio-iptables"];
    args.extend(sidecar_argv_with(&["--log_output_level=default:info"]));
    args
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The block-style `args:` list of the init container `name` (one `- item` per line; quoted
/// items are unquoted). Enough YAML for our own files, which the test keeps in that shape.
fn init_args(manifest: &str, name: &str) -> Vec<String> {
    let start = manifest.find(&format!("- name: {name}\n")).unwrap_or_else(|| panic!("no container {name}"));
    let rest = &manifest[start..];
    let args_at = rest.find("\n    args:\n").expect("an args: list") + "\n    args:\n".len();
    rest[args_at..]
        .lines()
        .map_while(|line| line.strip_prefix("    - "))
        .map(|item| item.strip_prefix('"').and_then(|i| i.strip_suffix('"')).unwrap_or(item).to_string())
        .collect()
}

fn security_context(manifest: &str, name: &str) -> String {
    let start = manifest.find(&format!("- name: {name}\n")).expect("container");
    let rest = &manifest[start..];
    let at = rest.find("    securityContext:\n").expect("securityContext");
    rest[at..].lines().skip(1).take_while(|line| line.starts_with("      ")).collect::<Vec<_>>().join("\n")
}

#[test]
fn istio_init_example_runs_the_injected_argv_as_root_with_net_admin() {
    let manifest = read("examples/istio-init-pod.yaml");
    assert_eq!(init_args(&manifest, "istio-init"), istio_init_args());
    let context = security_context(&manifest, "istio-init");
    for line in ["- NET_ADMIN", "- NET_RAW", "runAsUser: 0", "runAsGroup: 0", "runAsNonRoot: false"] {
        assert!(context.contains(line), "{line} missing from\n{context}");
    }
}

#[test]
fn istio_validation_example_adds_validation_flags_and_runs_as_the_proxy() {
    let manifest = read("examples/istio-validation-pod.yaml");
    let mut expected: Vec<&str> = istio_init_args();
    expected.extend(["--run-validation", "--skip-rule-apply"]);
    assert_eq!(init_args(&manifest, "istio-validation"), expected);
    let context = security_context(&manifest, "istio-validation");
    for line in ["runAsUser: 1337", "runAsGroup: 1337", "runAsNonRoot: true", "readOnlyRootFilesystem: true"] {
        assert!(context.contains(line), "{line} missing from\n{context}");
    }
    assert!(!context.contains("add:"), "no capabilities are added:\n{context}");
}

#[test]
fn the_binary_accepts_the_injected_argv() {
    // Dry-run only; IPv6 forced off so the host's addresses do not matter.
    let output = Command::new(env!("CARGO_BIN_EXE_istio-iptables"))
        .args(istio_init_args())
        .args(["--dry-run", "--enable-inbound-ipv6=false"])
        .env_clear()
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rules = String::from_utf8_lossy(&output.stdout);
    assert!(rules.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"), "{rules}");
}

#[test]
fn dockerfile_entrypoint_is_the_static_binary_with_the_tools_it_runs() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/istio-iptables\"]"));
    assert!(dockerfile.contains("scripts/build-static.sh"));
    for tool in ["iptables-legacy-restore", "ip6tables-nft-save", "iptables-save", "ip6tables-restore", " nft;"] {
        assert!(dockerfile.contains(tool), "{tool} not checked in the runtime image");
    }
    for example in ["examples/istio-init-pod.yaml", "examples/istio-validation-pod.yaml"] {
        assert!(read(example).contains("image: registry.example.com/istio-iptables:0.1.0"), "{example}");
    }
    assert!(dockerfile.contains("docker build -t registry.example.com/istio-iptables:0.1.0 ."));
}

#[test]
fn readme_shows_the_same_argv_image_and_build_as_the_examples_and_dockerfile() {
    let readme = read("README.md");
    // The injected argv, as the README quotes it for istio-init.
    let argv = "istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x \"\" -b '*' -d 15090,15021,15020";
    assert!(readme.contains(argv), "README lacks the istio-init argv");
    for manifest in ["examples/istio-init-pod.yaml", "examples/istio-validation-pod.yaml"] {
        assert!(readme.contains(manifest), "README does not mention {manifest}");
        let text = read(manifest);
        let image = text.lines().find_map(|l| l.trim().strip_prefix("image: ")).expect("an image");
        let image = image.trim_matches('"');
        let repository = image.rsplit_once(':').map_or(image, |(repo, _)| repo);
        assert!(readme.contains(repository), "README does not show the image {repository} used by {manifest}");
    }
    assert!(read("Dockerfile").contains("scripts/build-static.sh"));
    assert!(readme.contains("scripts/build-static.sh"), "README must say how the image's binary is built");
    assert!(readme.contains("values.global.proxy_init.image"), "README must say how to swap the image into Istio");
}

/// The image's build stage sees only what its `COPY` lines bring in. Cargo refuses to build when
/// a target the manifest declares (`[lib]`, `[[bin]]`, `[[bench]]`…) has no source file, so
/// every declared target's file must be among the copied paths.
#[test]
fn docker_build_stage_copies_every_target_the_manifest_declares() {
    let dockerfile = read("Dockerfile");
    let build_stage = dockerfile.split("\nFROM ").nth(1).expect("a build stage after the first FROM");
    let copied: Vec<String> = build_stage
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[1..words.len() - 1].iter().map(|w| w.trim_end_matches('/').to_string()).collect::<Vec<_>>()
        })
        .collect();
    assert!(copied.iter().any(|c| c == "Cargo.toml"), "the build stage must copy Cargo.toml: {copied:?}");
    let is_copied = |file: &str| copied.iter().any(|c| file == c || file.starts_with(&format!("{c}/")));
    for file in declared_target_files(&read("Cargo.toml")) {
        assert!(root_has(&file), "Cargo.toml declares {file}, which does not exist");
        assert!(is_copied(&file), "Cargo.toml declares {file}, but the Dockerfile's build stage does not copy it");
    }
}

fn root_has(file: &str) -> bool {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(file).exists()
}

/// Source files of the targets declared in the manifest: an explicit `path`, or cargo's default
/// (`benches/NAME.rs`, `src/bin/NAME.rs`, …) for a section with only a name.
fn declared_target_files(manifest: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut current: Option<Target> = None;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            files.extend(current.take().map(Target::file));
            current = Target::for_header(line);
        } else if let (Some(target), Some((key, value))) = (current.as_mut(), line.split_once('=')) {
            let value = value.trim().trim_matches('"').to_string();
            match key.trim() {
                "name" => target.name = Some(value),
                "path" => target.path = Some(value),
                _ => {}
            }
        }
    }
    files.extend(current.map(Target::file));
    files
}

/// A `[lib]` / `[[bin]]` / `[[bench]]` / `[[test]]` / `[[example]]` section of the manifest.
struct Target {
    default_dir: Option<&'static str>,
    name: Option<String>,
    path: Option<String>,
}

impl Target {
    fn for_header(header: &str) -> Option<Target> {
        let default_dir = match header {
            "[lib]" => None,
            "[[bin]]" => Some("src/bin"),
            "[[bench]]" => Some("benches"),
            "[[test]]" => Some("tests"),
            "[[example]]" => Some("examples"),
            _ => return None,
        };
        Some(Target { default_dir, name: None, path: None })
    }

    fn file(self) -> String {
        match (self.path, self.default_dir, self.name) {
            (Some(path), _, _) => path,
            (None, Some(dir), Some(name)) => format!("{dir}/{name}.rs"),
            _ => "src/lib.rs".to_string(),
        }
    }
}

/// The README's first command (the main job) must work as written from a fresh clone: it is a
/// `cargo run` with the default binary, so it breaks if the crate gains a binary without
/// `default-run`.
#[test]
fn readme_main_job_command_runs_as_written() {
    let readme = read("README.md");
    let command = readme
        .lines()
        .find(|l| l.starts_with("ENABLE_INBOUND_IPV6=false cargo run --release -- "))
        .expect("the README's main-job command");
    let manifest = read("Cargo.toml");
    assert!(
        manifest.contains("default-run = \"istio-iptables\""),
        "`{command}` needs default-run when the crate has more than one binary"
    );
    let argv = command.trim_start_matches("ENABLE_INBOUND_IPV6=false cargo run --release -- ");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("exec \"$0\" {argv}"))
        .arg(env!("CARGO_BIN_EXE_istio-iptables"))
        .env_clear()
        .env("ENABLE_INBOUND_IPV6", "false")
        .output()
        .expect("run the README's argv");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("# iptables-restore --noflush\n* nat\n"));
}
