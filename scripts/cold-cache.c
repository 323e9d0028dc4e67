/* Cold-cache calibration for BENCHMARKS.md: the same work run back to back or
 * after sleeping GAP_US between runs; prints the mean time per run.
 * MODE 0: an arithmetic loop of ITERS steps (W_KIB unused); MODE 1: ITERS reads
 * at random over a W_KIB buffer (1..8192), each index from a counter, not from
 * the byte read before.
 * Usage: gcc -O2 -o /tmp/cold scripts/cold-cache.c; /tmp/cold GAP_US MODE ITERS W_KIB */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_KIB 8192
static uint8_t buf[MAX_KIB * 1024];
static size_t sz;
volatile uint64_t sink;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static uint64_t step(uint64_t x) { return x * 6364136223846793005ULL + 1442695040888963407ULL; }

static uint64_t alu(long n) {
    uint64_t x = 1;
    for (long i = 0; i < n; i++) {
        x = step(x);
        x ^= x >> 17;
    }
    return x;
}

static uint64_t mem(long n) {
    uint64_t x = 1, s = 0;
    for (long i = 0; i < n; i++) {
        x = step(x);
        s += buf[(x >> 20) % sz];
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s GAP_US MODE(0 alu, 1 mem) ITERS W_KIB(1..%d)\n", argv[0], MAX_KIB);
        return 2;
    }
    long gap = atol(argv[1]), which = atol(argv[2]), n = atol(argv[3]), kib = atol(argv[4]);
    if (gap < 0 || (which != 0 && which != 1) || n < 1 || kib < 1 || kib > MAX_KIB) {
        fprintf(stderr, "bad arguments: GAP_US >= 0, MODE 0 or 1, ITERS >= 1, W_KIB in 1..%d\n", MAX_KIB);
        return 2;
    }
    sz = (size_t)kib * 1024;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)i;
    const int warmup = 10, reps = 200;
    double total = 0;
    for (int r = 0; r < warmup + reps; r++) {
        if (gap) {
            struct timespec s = {gap / 1000000, (gap % 1000000) * 1000};
            nanosleep(&s, NULL);
        }
        double a = now_us();
        sink += which ? mem(n) : alu(n);
        double b = now_us();
        if (r >= warmup) total += b - a;
    }
    printf("gap=%ldus %s: %.1f us per run\n", gap, which ? "mem" : "alu", total / reps);
    return 0;
}
