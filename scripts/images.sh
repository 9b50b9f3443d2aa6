#!/usr/bin/env bash
# Builds the project's container images with no container registry: the Debian 12 bases are
# made from Debian's archive (debootstrap + docker import), the Python dependencies are the
# wheels of deploy/docker/requirements.lock fetched on the host, Kafka is the jars the
# development broker already resolves from Maven Central. `docker build` then runs with
# --network none: nothing is fetched inside a build, on a connected host or an air-gapped one.
#
#   scripts/images.sh build                  bases, wheels, contexts, then the three images
#   scripts/images.sh bundle DIR             everything a build needs, into DIR (connected host)
#   scripts/images.sh build --from DIR       build from a bundle only (air-gapped host)
#   scripts/images.sh bases                  only the base images
#   scripts/images.sh lock                   regenerate deploy/docker/requirements.lock
#
# Overrides (environment):
#   DEBIAN_MIRROR      Debian archive for debootstrap (default http://deb.debian.org/debian;
#                      a snapshot.debian.org URL of a date gives byte-identical bases)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST   pip's own: an internal index
#   MAVEN_OPTS / ~/.m2/settings.xml                         Maven's own: an internal mirror
#   RUNTIME_SIGNALS_CACHE   cache root (default ~/.cache/runtime-signals); bases, wheels and
#                      build contexts live under <cache>/docker, outside the repository
#   IMAGE_PREFIX       image names' prefix (default runtime-signals/)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${RUNTIME_SIGNALS_CACHE:-$HOME/.cache/runtime-signals}
work=$cache/docker
venv=$cache/venv
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
prefix=${IMAGE_PREFIX:-runtime-signals/}
suite=bookworm
lock=$repo/deploy/docker/requirements.lock
python=${PYTHON:-$venv/bin/python}
# Debian's CLI when installed (it matches Debian's engine), else whichever is on PATH.
docker=${DOCKER:-$(command -v /usr/bin/docker || command -v docker || echo docker)}

say() { printf '[images] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)
kafka_version=$(sed -n 's/^KAFKA_VERSION = "\(.*\)"$/\1/p' "$repo/runtime_signals/devtools/localkafka.py")

# name -> Debian packages of the base (debootstrap --include). One per image, so the
# processor carries neither LLVM (bcc) nor a JVM.
declare -A base_packages=(
  [python]=python3,python3-venv,ca-certificates
  [bcc]=python3,python3-venv,ca-certificates,python3-bpfcc
  [java]=openjdk-17-jre-headless,ca-certificates
)

base_image() { echo "${prefix}debian-$1:12"; }

# --- bases: debootstrap once, keep the root file system as a tarball, import it.
make_base() {
  local name=$1 tarball=$2 rootfs
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  rootfs=$(mktemp -d "$work/rootfs-$name.XXXXXX")
  say "debootstrap $suite ($name: ${base_packages[$name]}) from $mirror"
  if ! debootstrap --variant=minbase --include="${base_packages[$name]}" "$suite" "$rootfs" "$mirror" \
      > "$work/debootstrap-$name.log" 2>&1; then
    rm -rf "$rootfs"
    die "debootstrap of the $name base failed; see $work/debootstrap-$name.log"
  fi
  # Nothing of the build host stays in the image: apt's lists, caches, a machine id.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/etc/machine-id
  # Sorted, with fixed owners and times, so one rootfs gives one tarball.
  tar --sort=name --numeric-owner --mtime='@0' -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
}

bases() {
  local from=${1:-} name tarball
  mkdir -p "$work/bases"
  for name in python bcc java; do
    tarball=${from:+$from/bases}
    tarball=${tarball:-$work/bases}/debian-$name-12.tar
    if "$docker" image inspect "$(base_image "$name")" >/dev/null 2>&1 && [ -z "$from" ]; then
      continue
    fi
    if [ ! -s "$tarball" ]; then
      [ -z "$from" ] || die "bundle $from has no bases/debian-$name-12.tar"
      make_base "$name" "$tarball"
    fi
    say "importing $(base_image "$name") from $tarball"
    "$docker" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' "$tarball" "$(base_image "$name")" >/dev/null
  done
}

# --- Python wheels: every locked dependency and the project itself, built on this host.
check_python() {
  [ -x "$python" ] || die "$python not found: run scripts/bootstrap.sh, or set PYTHON to a CPython 3.11"
  # The images run Debian 12's CPython 3.11: wheels with C extensions must be cp311.
  [ "$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = 3.11 ] \
    || die "$python is not CPython 3.11 (Debian 12's): the wheels would not fit the images; set PYTHON"
}

wheels() {
  local dir=$1
  check_python
  mkdir -p "$dir"
  say "wheels of $(basename "$lock") into $dir"
  # A warm wheelhouse answers alone (no index asked); otherwise the index fills what is missing.
  "$python" -m pip wheel -q --disable-pip-version-check --no-index --find-links "$dir" --wheel-dir "$dir" \
      -r "$lock" >/dev/null 2>&1 \
    || "$python" -m pip wheel -q --disable-pip-version-check --find-links "$dir" --wheel-dir "$dir" -r "$lock"
  # The project's own wheel apart, rebuilt each time; a fixed SOURCE_DATE_EPOCH makes the
  # same source give the same wheel, so docker's build cache holds when nothing changed.
  rm -rf "$dir/project" && mkdir -p "$dir/project"
  SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel -q --disable-pip-version-check --no-deps \
    --no-build-isolation --wheel-dir "$dir/project" "$repo" 2>/dev/null \
    || SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel -q --disable-pip-version-check --no-deps \
      --wheel-dir "$dir/project" "$repo"
}

# --- Kafka: the development broker's classpath plus kafka-tools (the health check).
kafka_jars() {
  local dir=$1 tools=$cache/kafka-tools-$kafka_version
  "$python" -m runtime_signals.devtools.localkafka provision >/dev/null
  if [ ! -s "$tools/kafka-tools-$kafka_version.jar" ]; then
    command -v mvn >/dev/null || die "mvn is not installed (apt-get install maven)"
    local staging
    staging=$(mktemp -d)
    (cd "$staging" && mvn -q -B dependency:copy "-Dartifact=org.apache.kafka:kafka-tools:$kafka_version" \
      "-DoutputDirectory=$staging") || die "mvn could not fetch org.apache.kafka:kafka-tools:$kafka_version"
    mkdir -p "$tools"
    mv "$staging/kafka-tools-$kafka_version.jar" "$tools/"
    rm -rf "$staging"
  fi
  mkdir -p "$dir"
  cp -p "$cache/kafka-$kafka_version"/lib/*.jar "$tools/kafka-tools-$kafka_version.jar" "$dir/"
}

# --- build contexts: small directories outside the repository.
python_context() {
  local wheelhouse=$1 dir=$work/context-python${2:-}
  rm -rf "$dir" && mkdir -p "$dir/wheels" "$dir/project"
  cp "$lock" "$dir/requirements.lock"
  cp -p "$wheelhouse"/*.whl "$dir/wheels/"
  cp -p "$wheelhouse"/project/*.whl "$dir/project/"
  echo "$dir"
}

kafka_context() {
  local jars=$1 dir=$work/context-kafka${2:-}
  rm -rf "$dir" && mkdir -p "$dir/libs"
  cp -p "$jars"/*.jar "$dir/libs/"
  cp -p "$repo/deploy/docker/kafka/entrypoint.sh" "$repo/deploy/docker/kafka/log4j2.properties" "$dir/"
  echo "$dir"
}

build_one() {
  local dockerfile=$1 tag=$2 context=$3 base=$4
  say "docker build $tag ($dockerfile, no network)"
  "$docker" build -q --network none --build-arg "BASE_IMAGE=$(base_image "$base")" \
      -f "$repo/deploy/docker/$dockerfile" -t "$tag" "$context" >/dev/null \
    || die "docker build of $tag failed (rerun: docker build --network none -f deploy/docker/$dockerfile $context)"
}

build() {
  local from=""
  if [ "${1:-}" = --from ]; then
    from=${2:?--from needs the bundle directory}
    [ -d "$from/wheels" ] && [ -d "$from/kafka" ] || die "$from is not a bundle (scripts/images.sh bundle DIR)"
  fi
  command -v "$docker" >/dev/null || die "docker is not installed (scripts/bootstrap.sh --docker)"
  bases "$from"
  local wheelhouse=${from:+$from/wheels} jars=${from:+$from/kafka}
  if [ -z "$from" ]; then
    wheelhouse=$work/wheels && wheels "$wheelhouse"
    jars=$work/kafka && kafka_jars "$jars"
  fi
  local python_ctx kafka_ctx
  python_ctx=$(python_context "$wheelhouse" "${from:+-bundle}")
  kafka_ctx=$(kafka_context "$jars" "${from:+-bundle}")
  build_one Dockerfile.processor "${prefix}processor:$version" "$python_ctx" python
  build_one Dockerfile.agent "${prefix}agent:$version" "$python_ctx" bcc
  build_one Dockerfile.kafka "${prefix}kafka:$kafka_version" "$kafka_ctx" java
  say "built ${prefix}processor:$version ${prefix}agent:$version ${prefix}kafka:$kafka_version"
}

bundle() {
  local dir=${1:?bundle needs a directory}
  mkdir -p "$dir/bases"
  for name in python bcc java; do
    [ -s "$dir/bases/debian-$name-12.tar" ] && continue
    [ -s "$work/bases/debian-$name-12.tar" ] || { mkdir -p "$work/bases"; make_base "$name" "$work/bases/debian-$name-12.tar"; }
    # A hard link when the bundle is on the cache's file system (the tests'), else a copy.
    ln "$work/bases/debian-$name-12.tar" "$dir/bases/" 2>/dev/null || cp "$work/bases/debian-$name-12.tar" "$dir/bases/"
  done
  wheels "$dir/wheels"
  kafka_jars "$dir/kafka"
  say "bundle ready in $dir: carry it over, then scripts/images.sh build --from $dir"
}

relock() {
  check_python
  local tmp
  tmp=$(mktemp -d)
  "$python" -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install -q --disable-pip-version-check "$repo"
  { sed -n '/^#/p' "$lock"; "$tmp/venv/bin/pip" freeze --exclude runtime-signals; } > "$lock.tmp"
  mv "$lock.tmp" "$lock"
  rm -rf "$tmp"
  say "rewrote $lock"
}

mkdir -p "$work"
# One build at a time per cache: the contexts and the wheelhouse are shared directories.
exec 9>"$work/.lock"
flock 9
case "${1:-}" in
  build) shift; build "$@" ;;
  bases) bases ;;
  bundle) shift; bundle "$@" ;;
  lock) relock ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
