/* test_hash.c — vt_hash64 and vt_hash_mix64. */
#include <stdlib.h>
#include <string.h>

#include "vt_test.h"

/* The bytes the pinned values below are computed over. */
static void pattern(unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 31 + 7);
}

/* Known answers, computed once from this implementation and pinned: they
 * keep the algorithm from changing by accident (hashes may be stored, e.g.
 * as fingerprints in a run's history), and being computed from bytes alone
 * they must come out the same on a big-endian machine. A deliberate change
 * of the algorithm updates them. */
static const struct {
    size_t len;
    uint64_t seed;
    uint64_t want;
} kat[] = {
    {0, 0x0000000000000000ull, 0x71a02b6a1faa1a75ull},
    {1, 0x0000000000000000ull, 0x9d037cb22dd804f0ull},
    {2, 0x0000000000000000ull, 0x6f6a5c0561f803a1ull},
    {3, 0x0000000000000000ull, 0xcb5b9f9168ae7e78ull},
    {4, 0x0000000000000000ull, 0xca4289222b74c9b8ull},
    {5, 0x0000000000000000ull, 0x8f0e9675c77c4ea2ull},
    {6, 0x0000000000000000ull, 0xc6add86d8c2614f5ull},
    {7, 0x0000000000000000ull, 0x3f2bf7b4a702c24full},
    {8, 0x0000000000000000ull, 0x42704f1347caf596ull},
    {9, 0x0000000000000000ull, 0xf521dec0519006b8ull},
    {10, 0x0000000000000000ull, 0xde4123f28e5fe017ull},
    {11, 0x0000000000000000ull, 0xc2cd640d652763d8ull},
    {12, 0x0000000000000000ull, 0xa5b60902b6515d12ull},
    {13, 0x0000000000000000ull, 0x779fdb26c78c229bull},
    {14, 0x0000000000000000ull, 0xed0e3ef7cd1d1b6bull},
    {15, 0x0000000000000000ull, 0xaf3601a45b3cff9dull},
    {16, 0x0000000000000000ull, 0x6dbc9c062575e284ull},
    {17, 0x0000000000000000ull, 0xdfbb918eccfc3be4ull},
    {18, 0x0000000000000000ull, 0x790edb50d7d4a19full},
    {19, 0x0000000000000000ull, 0x12eb8df94a992555ull},
    {20, 0x0000000000000000ull, 0x4780cc21897dd44eull},
    {21, 0x0000000000000000ull, 0x33dcb96e23944be8ull},
    {22, 0x0000000000000000ull, 0xbc1743223c48b6c9ull},
    {23, 0x0000000000000000ull, 0x21fe6f017406f765ull},
    {24, 0x0000000000000000ull, 0x6d31a0fa9ccdafc8ull},
    {25, 0x0000000000000000ull, 0xb0a410d81db760a0ull},
    {26, 0x0000000000000000ull, 0x169ea7e6d2a57abaull},
    {27, 0x0000000000000000ull, 0xf7177a4542395cfeull},
    {28, 0x0000000000000000ull, 0xd784bbbe1e52f98aull},
    {29, 0x0000000000000000ull, 0x31b1511a9332438cull},
    {30, 0x0000000000000000ull, 0x43ef14c20e38925bull},
    {31, 0x0000000000000000ull, 0xadec4eb57481871bull},
    {32, 0x0000000000000000ull, 0x55c78b6ccd9d6ed0ull},
    {33, 0x0000000000000000ull, 0x0a1207b138061057ull},
    {34, 0x0000000000000000ull, 0xb44a4e5126e8e260ull},
    {35, 0x0000000000000000ull, 0x5b478b2bdd7dd8ffull},
    {36, 0x0000000000000000ull, 0x153f75a5d632c9b0ull},
    {37, 0x0000000000000000ull, 0xf0e228c4882b7790ull},
    {38, 0x0000000000000000ull, 0xcc9aa8d67d1a3440ull},
    {39, 0x0000000000000000ull, 0x293b9a328a5f816cull},
    {40, 0x0000000000000000ull, 0x53db0fa336c37e01ull},
    {41, 0x0000000000000000ull, 0x4edac5899acc5553ull},
    {42, 0x0000000000000000ull, 0x2c378486f6267c22ull},
    {43, 0x0000000000000000ull, 0xa226154801a00e75ull},
    {44, 0x0000000000000000ull, 0x0f2ead3a7fab61b8ull},
    {45, 0x0000000000000000ull, 0x0ac1c67ad29167d7ull},
    {46, 0x0000000000000000ull, 0x24ee2d755f1066cbull},
    {47, 0x0000000000000000ull, 0x9349f879051d6790ull},
    {48, 0x0000000000000000ull, 0xe1b98c1b9911eda4ull},
    {49, 0x0000000000000000ull, 0x0353a448519c6972ull},
    {50, 0x0000000000000000ull, 0xa575eb08b970ba26ull},
    {51, 0x0000000000000000ull, 0x0e61d94e21fd0711ull},
    {52, 0x0000000000000000ull, 0x513841ee81f49a81ull},
    {53, 0x0000000000000000ull, 0x51c239957043365aull},
    {54, 0x0000000000000000ull, 0xbdaa85f8d42692c2ull},
    {55, 0x0000000000000000ull, 0xa9531b304697f50bull},
    {56, 0x0000000000000000ull, 0x03985a3456df36b4ull},
    {57, 0x0000000000000000ull, 0x2abdd8d9410862fcull},
    {58, 0x0000000000000000ull, 0x024e4b5054cd27c2ull},
    {59, 0x0000000000000000ull, 0x107c8f4f73b4956aull},
    {60, 0x0000000000000000ull, 0x4598805ec2d78430ull},
    {61, 0x0000000000000000ull, 0xd4a20ba6b83e4046ull},
    {62, 0x0000000000000000ull, 0xe9690971c89e3a70ull},
    {63, 0x0000000000000000ull, 0x516557adac279649ull},
    {64, 0x0000000000000000ull, 0xa59e0a29ff5d3e94ull},
    {1, 0x0000000000000001ull, 0xb7fe11a9793d24aaull},
    {1, 0x9e3779b97f4a7c15ull, 0x716ef0ee882deb57ull},
    {1, 0xffffffffffffffffull, 0xc0e076ae89715443ull},
    {7, 0x0000000000000001ull, 0x1fb648d9b8bd710dull},
    {7, 0x9e3779b97f4a7c15ull, 0xfa40609186e7f9f4ull},
    {7, 0xffffffffffffffffull, 0xf7cee7ca79d7cec9ull},
    {8, 0x0000000000000001ull, 0xe90718ab810d9f9dull},
    {8, 0x9e3779b97f4a7c15ull, 0xbf2f9a692322903full},
    {8, 0xffffffffffffffffull, 0x272145da42a9ccd2ull},
    {31, 0x0000000000000001ull, 0xfe8c7b86b1a01872ull},
    {31, 0x9e3779b97f4a7c15ull, 0xc48b598a8006dc2aull},
    {31, 0xffffffffffffffffull, 0x24d607966f9f5616ull},
    {32, 0x0000000000000001ull, 0xaeb7f234bde2def2ull},
    {32, 0x9e3779b97f4a7c15ull, 0x943bf9e44a08b23aull},
    {32, 0xffffffffffffffffull, 0xdef5b8b22c85047eull},
    {33, 0x0000000000000001ull, 0x96c1a839ca9c5b88ull},
    {33, 0x9e3779b97f4a7c15ull, 0xc179ff01ddc8a68dull},
    {33, 0xffffffffffffffffull, 0xc47a83b125c1a297ull},
    {100, 0x0000000000000000ull, 0x36aa9254c9d282faull},
    {100, 0x0000000000000001ull, 0xf1f5173bc18cf4acull},
    {100, 0x9e3779b97f4a7c15ull, 0x11cea1f4ab927bd0ull},
    {100, 0xffffffffffffffffull, 0xb4dd5544564bfaeaull},
    {255, 0x0000000000000000ull, 0x2db57d8d4b0ecb73ull},
    {255, 0x0000000000000001ull, 0x28d70f225b320221ull},
    {255, 0x9e3779b97f4a7c15ull, 0xdb544a78aac89f75ull},
    {255, 0xffffffffffffffffull, 0x32f15966fffb8a46ull},
    {256, 0x0000000000000000ull, 0x48511b6d31ebff97ull},
    {256, 0x0000000000000001ull, 0x16347c94accd9b0full},
    {256, 0x9e3779b97f4a7c15ull, 0x2c2f54b095939439ull},
    {256, 0xffffffffffffffffull, 0xd5acc30fe128b5ecull},
    {1000, 0x0000000000000000ull, 0x9f926f189aae559full},
    {1000, 0x0000000000000001ull, 0x66b8e407c3c57db2ull},
    {1000, 0x9e3779b97f4a7c15ull, 0x7a76d133e3784ebbull},
    {1000, 0xffffffffffffffffull, 0x548f8fb391eff301ull},
    {1024, 0x0000000000000000ull, 0xd8baeeb9596815e3ull},
    {1024, 0x0000000000000001ull, 0xd8ddc8b1617541dcull},
    {1024, 0x9e3779b97f4a7c15ull, 0x2353ba433bb08cdcull},
    {1024, 0xffffffffffffffffull, 0x56d0b8fdcc5aabf5ull},
};

VT_TEST(known_answers)
{
    unsigned char buf[1024];
    pattern(buf, sizeof buf);
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint64_t got = vt_hash64(buf, kat[i].len, kat[i].seed);
        if (got != kat[i].want)
            printf("  len %zu seed %llu\n", kat[i].len, (unsigned long long)kat[i].seed);
        VT_CHECK_EQ(got, kat[i].want);
    }
}

#define HASH_EMPTY 0x71a02b6a1faa1a75ull
#define HASH_A 0x11fe4af504c089ebull
#define HASH_VITTE 0x8abce4c5df872ae3ull
#define HASH_VITTE_1 0x102e5cc3b4f06aa7ull
#define MIX_1 0x8d2946892a4eca72ull
#define MIX_MAX 0x99a4b69434c368ecull

VT_TEST(known_answers_strings)
{
    VT_CHECK_EQ(vt_hash64("", 0, 0), HASH_EMPTY);
    VT_CHECK_EQ(vt_hash64("a", 1, 0), HASH_A);
    VT_CHECK_EQ(vt_hash64("vitte", 5, 0), HASH_VITTE);
    VT_CHECK_EQ(vt_hash64("vitte", 5, 1), HASH_VITTE_1);
    VT_CHECK_EQ(vt_hash_mix64(0), 0);
    VT_CHECK_EQ(vt_hash_mix64(1), MIX_1);
    VT_CHECK_EQ(vt_hash_mix64(UINT64_MAX), MIX_MAX);
}

VT_TEST(deterministic_and_reads_only_len_bytes)
{
    /* Each length in a block of exactly that size (ASan catches a read
     * past it) and at every alignment gives the same hash. */
    unsigned char ref[80];
    pattern(ref, sizeof ref);
    for (size_t len = 0; len <= 72; len++) {
        uint64_t h = vt_hash64(ref, len, 99);
        VT_CHECK_EQ(vt_hash64(ref, len, 99), h);
        unsigned char *exact = malloc(len ? len : 1);
        memcpy(exact, ref, len);
        VT_CHECK_EQ(vt_hash64(exact, len, 99), h);
        free(exact);
        for (size_t off = 1; off < 8; off++) {
            unsigned char *shifted = malloc(len + off);
            memcpy(shifted + off, ref, len);
            VT_CHECK_EQ(vt_hash64(shifted + off, len, 99), h);
            free(shifted);
        }
    }
    /* NULL with length 0 is the empty input. */
    VT_CHECK_EQ(vt_hash64(NULL, 0, 5), vt_hash64("", 0, 5));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Every tail length 0..64 (all paths: 8-byte words, the 4-lane loop, tails
 * of 0..7 bytes): each prefix and each zero-padded variant hash apart, and a
 * change of any one byte changes the hash. */
VT_TEST(all_tail_lengths)
{
    unsigned char buf[72];
    uint64_t h[2 * 65 - 1];
    size_t n = 0;
    pattern(buf, sizeof buf);
    for (size_t len = 0; len <= 64; len++)
        h[n++] = vt_hash64(buf, len, 0);
    /* Zeros: "a" and "a\0" differ, as do runs of zeros of any length. */
    unsigned char zeros[72] = {0};
    for (size_t len = 1; len <= 64; len++) /* 0: the same empty input */
        h[n++] = vt_hash64(zeros, len, 0);
    qsort(h, n, sizeof h[0], cmp_u64);
    for (size_t i = 1; i < n; i++)
        VT_CHECK_NE(h[i], h[i - 1]);

    for (size_t len = 1; len <= 64; len++) {
        uint64_t base = vt_hash64(buf, len, 3);
        for (size_t pos = 0; pos < len; pos++) {
            for (int delta = 1; delta < 256; delta += 37) {
                buf[pos] = (unsigned char)(buf[pos] + delta);
                uint64_t changed = vt_hash64(buf, len, 3);
                buf[pos] = (unsigned char)(buf[pos] - delta);
                VT_CHECK_NE(changed, base);
            }
        }
    }
}

VT_TEST(seed_changes_everything)
{
    unsigned char buf[64];
    pattern(buf, sizeof buf);
    size_t lens[] = {0, 1, 8, 13, 32, 64};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint64_t h[1000];
        for (uint64_t s = 0; s < 1000; s++)
            h[s] = vt_hash64(buf, lens[k], s);
        qsort(h, 1000, sizeof h[0], cmp_u64);
        for (size_t i = 1; i < 1000; i++)
            VT_CHECK_NE(h[i], h[i - 1]);
    }
    /* One flipped seed bit changes about half of the output. */
    long total = 0, trials = 0;
    for (int t = 0; t < 200; t++) {
        uint64_t seed = vt_test_rand();
        size_t len = (size_t)(vt_test_rand() % 65);
        uint64_t h = vt_hash64(buf, len, seed);
        for (int b = 0; b < 64; b++) {
            total += __builtin_popcountll(h ^ vt_hash64(buf, len, seed ^ (1ull << b)));
            trials++;
        }
    }
    double mean = (double)total / (double)trials;
    VT_CHECK(mean > 31.0 && mean < 33.0);
}

/* Strict avalanche, loosely: over random inputs of every length up to 100,
 * flipping one input bit flips each output bit with probability near 1/2.
 * The sample (~1.2 10^5 flips) puts the noise of a fair bit near 0.0015; the
 * bounds are far wider, so only a real defect fails. */
VT_TEST(avalanche)
{
    enum { INPUTS = 300, MAXLEN = 100 };
    static long flips[64];
    long trials = 0, total = 0;
    long per_len_total[MAXLEN + 1] = {0}, per_len_trials[MAXLEN + 1] = {0};
    unsigned char buf[MAXLEN];
    memset(flips, 0, sizeof flips);
    for (int t = 0; t < INPUTS; t++) {
        size_t len = 1 + (size_t)t % MAXLEN;
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)vt_test_rand();
        uint64_t seed = t % 2 ? vt_test_rand() : 0;
        uint64_t h = vt_hash64(buf, len, seed);
        for (size_t bit = 0; bit < len * 8; bit++) {
            buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            uint64_t d = h ^ vt_hash64(buf, len, seed);
            buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            for (int o = 0; o < 64; o++)
                flips[o] += (long)((d >> o) & 1);
            int pc = __builtin_popcountll(d);
            total += pc;
            trials++;
            per_len_total[len] += pc;
            per_len_trials[len]++;
        }
    }
    double mean = (double)total / (double)trials;
    VT_CHECK(mean > 31.5 && mean < 32.5);
    for (int o = 0; o < 64; o++) {
        double p = (double)flips[o] / (double)trials;
        if (p < 0.47 || p > 0.53)
            printf("  output bit %d flips with p=%.4f\n", o, p);
        VT_CHECK(p > 0.47 && p < 0.53);
    }
    /* Each length on its own (24 to 2400 flips): within 6 standard
     * deviations of 32 (the popcount of 64 fair bits has variance 16). */
    for (size_t len = 1; len <= MAXLEN; len++) {
        double n = (double)per_len_trials[len];
        double m = (double)per_len_total[len] / n;
        if ((m - 32.0) * (m - 32.0) * n >= 36.0 * 16.0)
            printf("  len %zu: mean %.2f bits over %.0f flips\n", len, m, n);
        VT_CHECK((m - 32.0) * (m - 32.0) * n < 36.0 * 16.0);
    }
}

VT_TEST(mix64_is_a_bijection_and_mixes)
{
    /* Distinct inputs, distinct outputs (sequential and random samples). */
    enum { N = 1 << 16 };
    uint64_t *h = malloc(2 * N * sizeof *h);
    VT_CHECK_NOT_NULL(h);
    for (uint64_t i = 0; i < N; i++) {
        h[i] = vt_hash_mix64(i);
        h[N + i] = vt_hash_mix64(vt_test_rand());
    }
    qsort(h, 2 * N, sizeof *h, cmp_u64);
    size_t dups = 0;
    for (size_t i = 1; i < 2 * N; i++)
        dups += h[i] == h[i - 1];
    free(h);
    /* Random draws can repeat an input with probability ~2^-32 here. */
    VT_CHECK_EQ(dups, 0);

    /* Avalanche: one input bit flips ~32 output bits, each ~half the time. */
    static long flips[64];
    memset(flips, 0, sizeof flips);
    long trials = 0, total = 0;
    for (int t = 0; t < 2000; t++) {
        uint64_t x = t % 2 ? vt_test_rand() : (uint64_t)t; /* small keys too */
        uint64_t m = vt_hash_mix64(x);
        for (int b = 0; b < 64; b++) {
            uint64_t d = m ^ vt_hash_mix64(x ^ (1ull << b));
            total += __builtin_popcountll(d);
            for (int o = 0; o < 64; o++)
                flips[o] += (long)((d >> o) & 1);
            trials++;
        }
    }
    double mean = (double)total / (double)trials;
    VT_CHECK(mean > 31.5 && mean < 32.5);
    for (int o = 0; o < 64; o++) {
        double p = (double)flips[o] / (double)trials;
        VT_CHECK(p > 0.47 && p < 0.53);
    }
}

/* Small integer keys spread evenly over a power-of-two table: the low bits
 * of the hash of 0, 1, 2 ... fill 256 buckets within a loose chi-square. */
VT_TEST(integer_keys_spread)
{
    enum { KEYS = 1 << 16, BUCKETS = 256 };
    static long count[BUCKETS];
    memset(count, 0, sizeof count);
    for (uint64_t k = 0; k < KEYS; k++) {
        unsigned char le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (unsigned char)(k >> (8 * i));
        count[vt_hash64(le, 8, 0) % BUCKETS]++;
    }
    double expect = (double)KEYS / BUCKETS, chi = 0;
    for (int b = 0; b < BUCKETS; b++)
        chi += ((double)count[b] - expect) * ((double)count[b] - expect) / expect;
    /* 255 degrees of freedom: mean 255, sd ~22.6; 400 is > 6 sd. */
    VT_CHECK(chi < 400.0);
}

/* The 4-lane loop and the word loop agree on nothing by accident: inputs
 * that differ only in which 8-byte block holds a value hash apart. */
VT_TEST(block_position_matters)
{
    unsigned char buf[128];
    uint64_t h[16];
    for (int pos = 0; pos < 16; pos++) {
        memset(buf, 0, sizeof buf);
        buf[pos * 8] = 1;
        h[pos] = vt_hash64(buf, sizeof buf, 0);
    }
    qsort(h, 16, sizeof h[0], cmp_u64);
    for (int i = 1; i < 16; i++)
        VT_CHECK_NE(h[i], h[i - 1]);
    /* Swapping two lanes' words changes the hash. */
    unsigned char a[32] = {1}, b[32] = {0};
    b[8] = 1;
    VT_CHECK_NE(vt_hash64(a, 32, 0), vt_hash64(b, 32, 0));
}
