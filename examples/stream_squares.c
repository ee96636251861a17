/* stream_squares: the stream pipeline of docs/async.md — a generator, an
 * ordered parallel map, a filter and batches by count and time. */
#include <stdint.h>
#include <stdio.h>
#include <vitte/async.h>

static vt_err count_to_100(void *ud, void *elem)
{
    uint64_t *next = ud;
    if (*next == 100)
        return VT_ECLOSED;                   /* the end */
    *(uint64_t *)elem = (*next)++;
    return VT_OK;
}

static vt_err square(void *ud, const void *in, void *out)
{
    (void)ud;
    uint64_t v = *(const uint64_t *)in;
    vt_sleep_ms(1);                          /* a slow call: four run at once */
    *(uint64_t *)out = v * v;
    return VT_OK;
}

static int even(void *ud, const void *elem)
{
    (void)ud;
    return *(const uint64_t *)elem % 2 == 0;
}

static int app(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    uint64_t next = 0;
    vt_stream *nums, *squares, *evens, *batches;
    vt_stream_generate(&nums, sizeof(uint64_t), count_to_100, &next, NULL);
    vt_stream_par_map(&squares, nums, sizeof(uint64_t), 4, 0, square, NULL, NULL); /* in order */
    vt_stream_filter(&evens, squares, even, NULL, NULL);
    vt_stream_batch(&batches, evens, 10, VT_MS(5), NULL);  /* up to 10, at most 5 ms apart */
    vt_batch b;
    vt_err e;
    while ((e = vt_stream_next(batches, &b, VT_FOREVER)) == VT_OK) {
        uint64_t sum = 0;
        for (size_t i = 0; i < b.count; i++)
            sum += ((const uint64_t *)b.items)[i];
        printf("%zu squares, sum %llu\n", b.count, (unsigned long long)sum);
        vt_batch_free(&b);                   /* each batch is the consumer's */
    }
    vt_stream_free(batches);                 /* the whole chain */
    return e == VT_ECLOSED ? 0 : 1;          /* VT_ECLOSED: the end */
}

VT_MAIN(app)
