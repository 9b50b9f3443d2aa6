/* Ground truth for the unwinding tests: calls Debian's libz deflate() through two chains
 * of ten distinct functions each and a third of eight with large frames, built by the test with
 * and without frame pointers.
 * argv: CALLS [GOFILE]. One warm-up call first (the agent learns the process from it);
 * with GOFILE, print "warm" and wait for the file, then make CALLS calls per chain, then
 * stay a moment so the agent can read the process while it runs.
 * Built with -DCORPUS_DLOPEN, the program does not link libz: it dlopens $PROBE_BINARY (or
 * libz.so.1) at the start of main and calls deflate through dlsym, so its first calls come
 * right after the library was loaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define KEEP asm volatile("" ::: "memory") /* a call followed by this is not a tail call */

#ifdef CORPUS_DLOPEN
#include <dlfcn.h>
static int (*dl_deflateInit_)(z_streamp, int, const char *, int);
static int (*dl_deflate)(z_streamp, int);
static int (*dl_deflateEnd)(z_streamp);
#undef deflateInit
#define deflateInit(strm, level) dl_deflateInit_((strm), (level), ZLIB_VERSION, (int)sizeof(z_stream))
#define deflate dl_deflate
#define deflateEnd dl_deflateEnd
static void load_libz(void)
{
    const char *path = getenv("PROBE_BINARY");
    void *lib = dlopen(path ? path : "libz.so.1", RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); exit(2); }
    dl_deflateInit_ = (int (*)(z_streamp, int, const char *, int))dlsym(lib, "deflateInit_");
    dl_deflate = (int (*)(z_streamp, int))dlsym(lib, "deflate");
    dl_deflateEnd = (int (*)(z_streamp))dlsym(lib, "deflateEnd");
    if (!dl_deflateInit_ || !dl_deflate || !dl_deflateEnd) { fprintf(stderr, "%s\n", dlerror()); exit(2); }
}
#else
static void load_libz(void) {}
#endif

static unsigned char input[4096];
static unsigned char output[8192];

__attribute__((noinline)) static unsigned long compress_once(int salt)
{
    z_stream stream;
    memset(&stream, 0, sizeof(stream));
    input[salt % sizeof(input)] ^= (unsigned char)salt;
    if (deflateInit(&stream, 6) != Z_OK) abort();
    stream.next_in = input;
    stream.avail_in = sizeof(input);
    stream.next_out = output;
    stream.avail_out = sizeof(output);
    if (deflate(&stream, Z_FINISH) != Z_STREAM_END) abort();
    unsigned long total = stream.total_out;
    deflateEnd(&stream);
    KEEP;
    return total;
}

#define LEVEL(name, next) \
    __attribute__((noinline)) unsigned long name(int n) { unsigned long r = next(n + 1) + (unsigned long)n; KEEP; return r; }

LEVEL(a10, compress_once) LEVEL(a9, a10) LEVEL(a8, a9) LEVEL(a7, a8) LEVEL(a6, a7)
LEVEL(a5, a6) LEVEL(a4, a5) LEVEL(a3, a4) LEVEL(a2, a3) LEVEL(a1, a2)
LEVEL(b10, compress_once) LEVEL(b9, b10) LEVEL(b8, b9) LEVEL(b7, b8) LEVEL(b6, b7)
LEVEL(b5, b6) LEVEL(b4, b5) LEVEL(b3, b4) LEVEL(b2, b3) LEVEL(b1, b2)

/* A third chain through frames larger than the walker's stack window (1 KiB: bpf/calltrace.bpf.c),
 * so that the window moves up the stack, in steps and past whole frames. */
#define BIG(name, next, bytes) \
    __attribute__((noinline)) unsigned long name(int n) { \
        volatile unsigned char pad[bytes]; pad[0] = (unsigned char)n; pad[bytes - 1] = (unsigned char)(n >> 1); \
        unsigned long r = next(n + 1) + pad[0] + pad[bytes - 1]; KEEP; return r; }

BIG(c8, compress_once, 3000) LEVEL(c7, c8) BIG(c6, c7, 700) LEVEL(c5, c6) BIG(c4, c5, 1500)
LEVEL(c3, c4) BIG(c2, c3, 40) LEVEL(c1, c2)

__attribute__((noinline)) unsigned long warm_up(void) { unsigned long r = compress_once(7); KEEP; return r; }

int main(int argc, char **argv)
{
    int calls = atoi(argv[1]);
    load_libz();
    unsigned long total = warm_up();
    if (argc > 2) {
        printf("warm\n");
        fflush(stdout);
        struct stat st;
        for (int i = 0; i < 2400 && stat(argv[2], &st) != 0; i++) usleep(50000);
    }
    for (int i = 0; i < calls; i++) total += a1(i);
    for (int i = 0; i < calls; i++) total += b1(i);
    for (int i = 0; i < calls; i++) total += c1(i);
    printf("%lu\n", total);
    fflush(stdout);
    if (argc > 2) usleep(1000000);
    return 0;
}
