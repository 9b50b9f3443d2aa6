"""Package URLs of real files: Debian's libz, a pip-installed wheel, npm packages installed by
the test, jars, a Go binary, a real rpm database; apk from its documented format."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import confluent_kafka
from packageurl import PackageURL

from runtime_signals.agent.pkgdb import read_os_release
from runtime_signals.agent.procmaps import DigestCache
from runtime_signals.agent.purl import PurlResolver
from tests.agent.programs import GO_MODULE, GO_VERSION_TAG, build_go_program

ROOT = Path("/")


def _mapped_path(fragment: str) -> str:
    """The path of a library as this process's /proc/self/maps shows it."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and fragment in parts[5]:
            return parts[5].strip()
    raise AssertionError(f"{fragment} is not mapped")


def test_debians_libz_is_its_deb_package() -> None:
    ctypes.CDLL("libz.so.1")
    path = _mapped_path("libz.so")  # /usr/lib/… on merged-/usr Debian, while dpkg lists /lib/…
    version, arch = subprocess.run(["dpkg-query", "-W", "-f", "${Version} ${Architecture}", "zlib1g"],
                                   capture_output=True, text=True, check=True).stdout.split()
    release = read_os_release(ROOT)
    assert release is not None
    expected = PackageURL(type="deb", namespace=release.id, name="zlib1g", version=version,
                          qualifiers={"arch": arch, "distro": f"{release.id}-{release.version_id}"}).to_string()
    assert PurlResolver().purl(ROOT, path) == expected
    assert expected.startswith("pkg:deb/debian/zlib1g@")


def test_a_pip_installed_extension_module_is_its_wheel() -> None:
    extension = next(Path(confluent_kafka.__file__).parent.glob("cimpl*.so"))
    version = importlib.metadata.version("confluent-kafka")
    assert PurlResolver().purl(ROOT, str(extension)) == f"pkg:pypi/confluent-kafka@{version}"


def test_npm_packages_installed_by_the_test(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is part of this machine's toolchain"
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefer-offline", "--ignore-scripts",
                    "is-number@7.0.0", "@sindresorhus/is@4.6.0"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=180)
    resolver = PurlResolver()
    modules = tmp_path / "node_modules"
    assert resolver.purl(ROOT, str(modules / "is-number/index.js")) == "pkg:npm/is-number@7.0.0"
    scoped = next((modules / "@sindresorhus/is").rglob("*.js"))
    assert resolver.purl(ROOT, str(scoped)) == "pkg:npm/%40sindresorhus/is@4.6.0"


def _jar(path: Path, entries: dict[str, str], manifest: str | None = None) -> Path:
    staging = path.with_suffix(".d")
    for name, text in entries.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    # The JDK's own jar tool writes the archive, as a build would.
    argv = ["jar", "--create", "--file", str(path)]
    if manifest is not None:
        manifest_file = path.with_suffix(".mf")
        manifest_file.write_text(manifest)
        argv += ["--manifest", str(manifest_file)]
    subprocess.run([*argv, "-C", str(staging), "."], check=True, capture_output=True)
    return path


def test_jars_are_maven_packages_by_pom_properties_or_manifest(tmp_path: Path) -> None:
    with_pom = _jar(tmp_path / "demo-lib-1.4.2.jar", {
        "META-INF/maven/io.example/demo-lib/pom.properties": "groupId=io.example\nartifactId=demo-lib\nversion=1.4.2\n",
        "io/example/Demo.txt": "x",
    })
    manifest_only = _jar(tmp_path / "tool.jar", {"x.txt": "x"},
                         manifest="Manifest-Version: 1.0\nImplementation-Vendor-Id: org.example.tools\n"
                                  "Implementation-Title: tool\nImplementation-Version: 0.9\n")
    resolver = PurlResolver()
    assert resolver.purl(ROOT, str(with_pom)) == "pkg:maven/io.example/demo-lib@1.4.2"
    assert resolver.purl(ROOT, str(manifest_only)) == "pkg:maven/org.example.tools/tool@0.9"
    with zipfile.ZipFile(with_pom) as archive:
        assert "META-INF/MANIFEST.MF" in archive.namelist()  # it is a real jar


def test_a_go_binary_is_its_module_at_its_tag(tmp_path: Path) -> None:
    binary = build_go_program(tmp_path)
    assert PurlResolver().purl(ROOT, str(binary)) == f"pkg:golang/{GO_MODULE}@{GO_VERSION_TAG}"


RPM_SPEC = """Name: signals-demo
Version: 2.4.1
Release: 3
Epoch: 1
Summary: a library for the PURL test
License: MIT
BuildArch: x86_64
%description
demo
%install
mkdir -p %{buildroot}/usr/lib64
cp %{_sourcedir}/libdemo.so.2 %{buildroot}/usr/lib64/libdemo.so.2
%files
/usr/lib64/libdemo.so.2
"""


def test_a_file_installed_by_rpm_into_a_fedora_root(tmp_path: Path) -> None:
    """rpm 4.18 (Debian's) builds a real package and installs it into a root with an sqlite
    rpmdb, as Fedora and RHEL 9 images have; the agent reads the database itself."""
    assert shutil.which("rpmbuild"), "rpm is missing: scripts/bootstrap.sh installs Debian's rpm"
    for sub in ("SPECS", "SOURCES", "root/etc"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "SPECS/demo.spec").write_text(RPM_SPEC)
    (tmp_path / "d.c").write_text("int demo(void) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "SOURCES/libdemo.so.2"), str(tmp_path / "d.c")],
                   check=True)
    subprocess.run(["rpmbuild", "--define", f"_topdir {tmp_path}", "--define", "debug_package %{nil}",
                    "--define", "__os_install_post %{nil}", "-bb", str(tmp_path / "SPECS/demo.spec")],
                   check=True, capture_output=True)
    root = tmp_path / "root"
    (root / "etc/os-release").write_text('ID=fedora\nVERSION_ID=40\n')
    package = next((tmp_path / "RPMS").rglob("*.rpm"))
    rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm"]
    subprocess.run([*rpm, "--initdb"], check=True, capture_output=True)
    subprocess.run([*rpm, "-i", "--nodeps", "--ignorearch", "--ignoreos", "--nosignature", str(package)],
                   check=True, capture_output=True)
    assert (root / "var/lib/rpm/rpmdb.sqlite").is_file()
    assert (PurlResolver().purl(root, "/usr/lib64/libdemo.so.2")
            == "pkg:rpm/fedora/signals-demo@2.4.1-3?arch=x86_64&distro=fedora-40&epoch=1")


def test_alpine_apk_database(tmp_path: Path) -> None:
    # No apk tools on Debian: the installed database is written in apk's documented format
    # (P name, V version, A arch, F directory, R file), as in an Alpine image.
    (tmp_path / "lib/apk/db").mkdir(parents=True)
    (tmp_path / "lib/apk/db/installed").write_text(
        "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:383152\nF:lib\nR:ld-musl-x86_64.so.1\nR:libc.musl-x86_64.so.1\n\n"
        "C:Q1def=\nP:zlib\nV:1.3.1-r0\nA:x86_64\nF:lib\nR:libz.so.1.3.1\n\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.18.4\n')
    for name in ("ld-musl-x86_64.so.1", "libz.so.1.3.1"):
        (tmp_path / "lib" / name).write_bytes(b"\x7fELF")
    resolver = PurlResolver()
    assert (resolver.purl(tmp_path, "/lib/ld-musl-x86_64.so.1")
            == "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.18.4")
    assert resolver.purl(tmp_path, "/lib/libz.so.1.3.1") == "pkg:apk/alpine/zlib@1.3.1-r0?arch=x86_64&distro=alpine-3.18.4"


def test_each_root_answers_from_its_own_package_database(tmp_path: Path) -> None:
    """A container's files resolve against the container's dpkg database, not the host's."""
    library = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
    (tmp_path / "var/lib/dpkg/info").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.2-0ubuntu1.15\n"
        "Description: Secure Sockets Layer toolkit\n shared libraries\n\n")
    (tmp_path / "var/lib/dpkg/info/libssl3:amd64.list").write_text(f"/.\n/usr\n{library}\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('ID=ubuntu\nVERSION_ID="22.04"\n')
    (tmp_path / library.lstrip("/")).parent.mkdir(parents=True)
    (tmp_path / library.lstrip("/")).write_bytes(b"\x7fELF container copy")
    assert (PurlResolver().purl(tmp_path, library)
            == "pkg:deb/ubuntu/libssl3@3.0.2-0ubuntu1.15?arch=amd64&distro=ubuntu-22.04")


def test_a_file_is_hashed_and_resolved_once_whatever_path_reaches_it(tmp_path: Path) -> None:
    library = Path(os.path.realpath("/lib/x86_64-linux-gnu/libz.so.1"))
    digests = DigestCache()
    via_host = digests.digest(library)
    via_root = digests.digest(Path(f"/proc/{os.getpid()}/root") / str(library).lstrip("/"))
    assert via_host == via_root and via_host is not None and via_host.startswith("sha256:")
    assert digests.files_hashed == 1
    copy = tmp_path / "libz-copy.so"
    shutil.copy(library, copy)
    assert digests.digest(copy) == via_host and digests.files_hashed == 2  # another inode
    os.utime(copy, ns=(0, 0))
    digests.digest(copy)
    assert digests.files_hashed == 3  # a changed mtime is another version of the file
    resolver = PurlResolver()
    first = resolver.purl(ROOT, str(library))
    assert resolver.purl(Path(f"/proc/{os.getpid()}/root"), str(library)) == first
    assert resolver.lookups == 1


def test_files_of_no_package_have_no_purl(tmp_path: Path) -> None:
    stray = tmp_path / "libstray.so"
    stray.write_bytes(b"\x7fELF")
    assert PurlResolver().purl(ROOT, str(stray)) is None
    assert PurlResolver().purl(ROOT, str(tmp_path / "missing.so")) is None
