// Ground truth for the unwinding tests, C++ at -O2 (no frame pointers): three true paths
// to imgproc::Parser::parse, through a template, a std::function and a virtual call.
// argv: CALLS [GOFILE], as unwind_corpus.c.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sys/stat.h>
#include <unistd.h>

#define KEEP asm volatile("" ::: "memory")

namespace imgproc {
struct Parser {
    __attribute__((noinline)) int parse(const char *data);
};
int Parser::parse(const char *data) {
    int n = 0;
    while (data[n]) n++;
    KEEP;
    return n;
}

template <int Depth> struct Pipeline {
    __attribute__((noinline)) static int run(Parser &parser, int i) {
        int r = Pipeline<Depth - 1>::run(parser, i + 1) + i;
        KEEP;
        return r;
    }
};
template <> struct Pipeline<0> {
    __attribute__((noinline)) static int run(Parser &parser, int i) {
        int r = parser.parse(i % 2 ? "odd" : "even");
        KEEP;
        return r;
    }
};

struct Handler {
    virtual ~Handler() = default;
    virtual int handle(Parser &parser, int i) = 0;
};
struct UploadHandler : Handler {
    __attribute__((noinline)) int handle(Parser &parser, int i) override {
        int r = parser.parse("upload") + i;
        KEEP;
        return r;
    }
};
}  // namespace imgproc

__attribute__((noinline)) int through_function(std::function<int(int)> &callback, int i) {
    int r = callback(i);
    KEEP;
    return r;
}

__attribute__((noinline)) int warm_up(imgproc::Parser &parser) {
    int r = parser.parse("warm");
    KEEP;
    return r;
}

int main(int argc, char **argv) {
    int calls = atoi(argv[1]);
    imgproc::Parser parser;
    long total = warm_up(parser);
    if (argc > 2) {
        std::printf("warm\n");
        std::fflush(stdout);
        struct stat st;
        for (int i = 0; i < 2400 && stat(argv[2], &st) != 0; i++) usleep(50000);
    }
    imgproc::UploadHandler upload;
    imgproc::Handler *handler = &upload;
    std::function<int(int)> callback = [&parser](int i) { return parser.parse(i % 3 ? "a" : "bb") + i; };
    for (int i = 0; i < calls; i++) total += imgproc::Pipeline<6>::run(parser, i);
    for (int i = 0; i < calls; i++) total += through_function(callback, i);
    for (int i = 0; i < calls; i++) total += handler->handle(parser, i);
    std::printf("%ld\n", total);
    std::fflush(stdout);
    if (argc > 2) usleep(1000000);
    return 0;
}
