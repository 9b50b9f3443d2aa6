"""Small real programs the agent tests probe, compiled by the tests themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CXX_WORKLOAD = r"""
#include <cstdio>
#include <cstdlib>
#include <sys/stat.h>
#include <unistd.h>

namespace imgproc {
struct Parser {
    __attribute__((noinline)) int parse(const char *data);
};
int Parser::parse(const char *data) {
    int n = 0;
    while (data[n]) n++;
    asm volatile("" ::: "memory");
    return n;
}
}  // namespace imgproc

__attribute__((noinline)) int handle_request(imgproc::Parser &parser, int i) {
    int n = parser.parse(i % 2 ? "odd" : "even");
    asm volatile("" ::: "memory");
    return n;
}

// argv: CALLS [FILE]: wait until FILE exists (the test's go signal), then call CALLS times,
// then stay a moment, as a service would: the agent reads a caller's /proc entries after the
// call, and for a process already gone it knows only what the kernel record carries.
int main(int argc, char **argv) {
    int calls = atoi(argv[1]);
    struct stat st;
    for (int i = 0; argc > 2 && i < 1200 && stat(argv[2], &st) != 0; i++) usleep(50000);
    imgproc::Parser parser;
    long total = 0;
    for (int i = 0; i < calls; i++) total += handle_request(parser, i);
    printf("%ld\n", total);
    if (argc > 2) usleep(1500000);
    return 0;
}
"""

PLUGIN = r"""
__attribute__((noinline)) int plugin_entry(int x) { asm volatile("" ::: "memory"); return x * 3; }
"""

# argv: LIBRARY STOPFILE: dlopen the library after start, then call it every 20 ms until STOPFILE exists.
DLOPEN_HOST = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    int (*entry)(int) = (int (*)(int))dlsym(lib, "plugin_entry");
    struct stat st;
    long total = 0;
    for (int i = 0; i < 1500 && stat(argv[2], &st) != 0; i++) { total += entry(i); usleep(20000); }
    printf("%ld\n", total);
    return 0;
}
"""

# argv: CALLS: crc32 from Debian's zlib, CALLS times, then stay a moment (see CXX_WORKLOAD).
ZLIB_CALLER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>
int main(int argc, char **argv) {
    unsigned long crc = 0;
    for (int i = 0; i < atoi(argv[1]); i++) crc = crc32(crc, (const unsigned char *)"signals", 7);
    printf("%lu\n", crc);
    usleep(1500000);
    return 0;
}
"""


# argv: ROOTFS PROGRAM ARGS...: run PROGRAM with ROOTFS as its root the way container runtimes
# do (a private mount namespace, pivot_root, the old root detached), so that /proc/<pid>/maps
# shows container paths ("/app/workload") and /proc/<pid>/root is the container's root.
MINI_CONTAINER = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
static int fail(const char *what) { perror(what); return 111; }
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (unshare(CLONE_NEWNS)) return fail("unshare");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) return fail("make private");
    if (mount(argv[1], argv[1], NULL, MS_BIND, NULL)) return fail("bind");
    if (chdir(argv[1])) return fail("chdir");
    mkdir("oldroot", 0700);
    if (syscall(SYS_pivot_root, ".", "oldroot")) return fail("pivot_root");
    if (chdir("/")) return fail("chdir /");
    if (umount2("/oldroot", MNT_DETACH)) return fail("umount old root");
    execv(argv[2], argv + 2);
    return fail("exec");
}
"""


def compile_c(source: str, out: Path, *flags: str, cxx: bool = False) -> Path:
    """Compile source into out with frame pointers (the agent walks them)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".cc" if cxx else ".c"
    src = out.with_name(out.name + suffix)
    src.write_text(source)
    compiler = "g++" if cxx else "gcc"
    subprocess.run([compiler, "-O1", "-g", "-fno-omit-frame-pointer", "-o", str(out), str(src), *flags],
                   check=True, capture_output=True)
    return out


def container_rootfs(base: Path) -> tuple[Path, Path]:
    """A minimal container root: a static C++ program at /app/workload inside base.
    Returns (root, program as seen from the host)."""
    root = base / "rootfs"
    program = compile_c(CXX_WORKLOAD, root / "app" / "workload", "-static", cxx=True)
    return root, program


def mini_container(base: Path) -> Path:
    """The MINI_CONTAINER launcher, compiled."""
    return compile_c(MINI_CONTAINER, base / "mini-container")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


GO_MAIN = """package main

import (
\t"fmt"
\t"os"
\t"time"
)

func main() {
\tfmt.Println("ready")
\tif len(os.Args) > 1 {
\t\ttime.Sleep(30 * time.Second)
\t}
}
"""
GO_MODULE = "example.com/signals/gosample"
GO_VERSION_TAG = "v1.2.3"


def build_go_program(base: Path) -> Path:
    """A Go program in a module whose git tag is GO_VERSION_TAG: go build stamps the module
    path and that version into the binary's build info (no network: no dependencies)."""
    source = base / "gosample"
    source.mkdir(parents=True, exist_ok=True)
    (source / "go.mod").write_text(f"module {GO_MODULE}\n\ngo 1.21\n")
    (source / "main.go").write_text(GO_MAIN)
    git = ["git", "-c", "user.name=signals-test", "-c", "user.email=test@invalid", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q", "."], ["add", "-A"], ["commit", "-qm", "sample"], ["tag", GO_VERSION_TAG]):
        subprocess.run(git + args, cwd=source, check=True, capture_output=True)
    out = base / "gosample-bin"
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local")
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=source, check=True, capture_output=True, env=env)
    return out
