/* The demo workload: a tiny "service" whose image parser is the function we pretend
 * is vulnerable. It is reached through two call paths, so a summary must show both:
 *   main -> handle_upload -> decode_image -> parse_image_header
 *   main -> handle_preview -> parse_image_header
 * Usage: workload UPLOADS PREVIEWS [LINGER_MS]
 * Built with frame pointers so the agent can walk the stack. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long parse_image_header(unsigned long seed)
{
    sink += seed * 2654435761u;
    return sink;
}

__attribute__((noinline)) unsigned long decode_image(unsigned long seed)
{
    unsigned long header = parse_image_header(seed);
    sink ^= header;
    return header + 1;
}

__attribute__((noinline)) unsigned long handle_upload(unsigned long seed)
{
    unsigned long decoded = decode_image(seed);
    sink += decoded;
    return decoded + 1;
}

__attribute__((noinline)) unsigned long handle_preview(unsigned long seed)
{
    unsigned long header = parse_image_header(seed);
    sink -= header;
    return header + 2;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s UPLOADS PREVIEWS [LINGER_MS]\n", argv[0]);
        return 2;
    }
    long uploads = atol(argv[1]);
    long previews = atol(argv[2]);
    long linger_ms = argc > 3 ? atol(argv[3]) : 1000;
    for (long i = 0; i < uploads; i++)
        handle_upload((unsigned long)i);
    for (long i = 0; i < previews; i++)
        handle_preview((unsigned long)i);
    /* Stay alive a moment: the agent reads /proc/<pid>/maps to place the frames. */
    struct timespec linger = {linger_ms / 1000, (linger_ms % 1000) * 1000000L};
    nanosleep(&linger, NULL);
    printf("uploads=%ld previews=%ld\n", uploads, previews);
    return 0;
}
