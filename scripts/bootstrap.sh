#!/usr/bin/env bash
# Installs everything runtime-signals needs on a Debian 12 machine, idempotently:
# Debian's bcc and kernel headers, tracefs, a virtualenv with the project, the Kafka jars.
# Downloads are cached outside the repo, in $RUNTIME_SIGNALS_CACHE (~/.cache/runtime-signals).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${RUNTIME_SIGNALS_CACHE:-$HOME/.cache/runtime-signals}
venv=$cache/venv
mkdir -p "$cache"

say() { printf '[bootstrap] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages: bcc (python3-bpfcc), its tools, a compiler, Java for the broker.
need=()
dpkg -s python3-bpfcc >/dev/null 2>&1 || need+=(python3-bpfcc)
dpkg -s bpfcc-tools >/dev/null 2>&1 || need+=(bpfcc-tools)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)  # Java programs the runtime tests compile
command -v npm >/dev/null 2>&1 || need+=(npm)  # npm packages for the PURL tests (node comes with it)
command -v rustc >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/rustc" ] || need+=(rustc)  # Rust binaries for the demangler tests
command -v go >/dev/null 2>&1 || need+=(golang-go)  # Go programs for the runtime and PURL tests
command -v gdb >/dev/null 2>&1 || need+=(gdb)  # ground truth for call paths
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v ruby >/dev/null 2>&1 || need+=(ruby)  # a Ruby process for the runtime-detection test
command -v rpmbuild >/dev/null 2>&1 || need+=(rpm)  # a real sqlite rpmdb for the PURL test
dpkg -s zlib1g-dev >/dev/null 2>&1 || need+=(zlib1g-dev)  # a program calling libz for the agent tests
command -v gdb >/dev/null 2>&1 || need+=(gdb)  # ground truth of the unwinding tests (tests/agent/test_unwind_truth.py)
command -v g++ >/dev/null 2>&1 || need+=(g++)  # the C++ -O2 program of the unwinding tests
command -v kcat >/dev/null 2>&1 || need+=(kcat)  # the interop tests read topics with it
command -v capsh >/dev/null 2>&1 || need+=(libcap2-bin)  # runs the agent with the DaemonSet's capabilities only
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the security tests' CA and certificates
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # renders `signals report` pages in the tests (headless)
# A Docker engine for the deployment tests (tests/deploy: images built, compose brought up, the
# agent against real containers), with debootstrap for the base images (no registry needed).
# RUNTIME_SIGNALS_NO_DOCKER=1 leaves Docker out; those tests then skip, saying why.
if [ -z "${RUNTIME_SIGNALS_NO_DOCKER:-}" ]; then
  [ -x /usr/sbin/dockerd ] || need+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
fi
kernel=$(uname -r)
if [ ! -e "/lib/modules/$kernel/build/Makefile" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
  # Headers for the running kernel when Debian has them; otherwise Debian's current
  # headers, which bcc accepts for uprobe programs (they use no kernel-internal layout).
  if apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; then
    need+=("linux-headers-$kernel")
  else
    need+=(linux-headers-amd64)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- Kernel headers where bcc looks for them.
if [ ! -e "/lib/modules/$kernel/build/Makefile" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
  arch_dir=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
  [ -n "$arch_dir" ] || { say "no kernel headers under /usr/src after installing linux-headers-amd64"; exit 1; }
  common_dir=${arch_dir%-amd64}-common
  say "linking /lib/modules/$kernel/build -> $arch_dir (source -> $common_dir)"
  as_root mkdir -p "/lib/modules/$kernel"
  as_root ln -sfn "$arch_dir" "/lib/modules/$kernel/build"
  as_root ln -sfn "$common_dir" "/lib/modules/$kernel/source"
fi

# --- tracefs, where uprobes are registered.
if [ ! -e /sys/kernel/tracing/uprobe_events ] && [ ! -e /sys/kernel/debug/tracing/uprobe_events ]; then
  say "mounting tracefs at /sys/kernel/tracing"
  as_root mount -t tracefs tracefs /sys/kernel/tracing
fi

# --- bpffs, where the agent pins its probes and maps so that they outlive a killed agent
# (agent/pinning.py); without it a restart loses (and counts) what the kernel held.
if ! awk '$2 == "/sys/fs/bpf" && $3 == "bpf" { found = 1 } END { exit !found }' /proc/mounts; then
  say "mounting bpffs at /sys/fs/bpf"
  as_root mount -t bpf bpf /sys/fs/bpf
fi

# --- Python: a virtualenv with the project and its test dependencies.
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  "$python" -m venv "$venv"
fi
stamp=$venv/.runtime-signals-installed
# Where the virtualenv's runtime_signals comes from, asked from outside the repository (cd /)
# and isolated (-I: no $PYTHONPATH, no current directory on sys.path): run from the repo,
# Python would import the package from the current directory and a virtualenv whose
# editable install points at a deleted or another clone would look up to date.
installed_from() {
  (cd / && "$venv/bin/python" -I -c 'import os, runtime_signals; print(os.path.dirname(os.path.dirname(os.path.realpath(runtime_signals.__file__))))') 2>/dev/null
}
if [ ! -e "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ] || [ "$(installed_from)" != "$(cd "$repo" && pwd -P)" ]; then
  say "installing runtime-signals (editable) and its dependencies into $venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$repo[test]"
  touch "$stamp"
fi
# Debian's bcc is a pure-Python package over libbcc: expose it, alone, to the venv.
bcc_dir=$cache/debian-bcc
mkdir -p "$bcc_dir"
ln -sfn /usr/lib/python3/dist-packages/bcc "$bcc_dir/bcc"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$bcc_dir" > "$site/debian-bcc.pth"
"$venv/bin/python" -c 'import bcc' || { say "bcc is not importable from $venv"; exit 1; }

# --- kustomize, to render deploy/k8s in the tests: kubectl has it built in; otherwise build
# the standalone one from the Go module proxy (tests/deploy finds it in $cache/bin).
if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1 \
   && [ ! -x "$cache/bin/kustomize" ] && command -v go >/dev/null 2>&1; then
  say "installing kustomize into $cache/bin"
  GOBIN=$cache/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0
fi

# --- helm, to render deploy/helm in the tests: Debian 12 has no package; build it from the Go
# module proxy like kustomize (tests/deploy/test_helm_chart.py finds it in $cache/bin).
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$cache/bin/helm" ] && command -v go >/dev/null 2>&1; then
  say "installing helm into $cache/bin (go install; a few minutes the first time)"
  # Not fatal: without helm only the chart's tests skip (and say so).
  GOBIN=$cache/bin timeout 1800 go install helm.sh/helm/v3/cmd/helm@v3.16.4 \
    || say "helm could not be built; tests/deploy/test_helm_chart.py will skip"
fi

# --- `signals` on the PATH, as the README runs it: a link to the virtualenv's entry point.
if [ -w /usr/local/bin ] || [ "$(id -u)" = 0 ]; then
  as_root ln -sfn "$venv/bin/signals" /usr/local/bin/signals
else
  say "add $venv/bin to PATH for the signals command (or: sudo ln -s $venv/bin/signals /usr/local/bin/signals)"
fi

# --- dockerd, when no engine answers: started in the background (no systemd on CI machines
# and containers), its log in the cache; the tests reach it at /var/run/docker.sock.
if [ -z "${RUNTIME_SIGNALS_NO_DOCKER:-}" ] && [ -x /usr/sbin/dockerd ] && ! /usr/bin/docker info >/dev/null 2>&1; then
  mkdir -p "$cache/docker"
  say "starting dockerd (log: $cache/docker/dockerd.log)"
  as_root sh -c "nohup /usr/sbin/dockerd --host unix:///var/run/docker.sock >>'$cache/docker/dockerd.log' 2>&1 &"
  for _ in $(seq 1 60); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 1; done
  /usr/bin/docker info >/dev/null 2>&1 || { say "dockerd did not answer within 60 s; see $cache/docker/dockerd.log"; exit 1; }
fi

# --- Kafka jars from Maven Central (cached).
"$venv/bin/python" -m runtime_signals.devtools.localkafka provision >&2
say "ready: $venv"
