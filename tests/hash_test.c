/*  hash_test.c — Check suite "hash": common/am2z_hash.c, the hash of the
    broker's in-memory tables and the write sets' Bloom filters. It must
    depend on every byte (the word-at-a-time loop and its tail), on the
    length and the seed, and spread ids evenly over a prime-sized table
    (zhashx) and over each of its 64 bits (a Bloom filter takes both
    halves). Bounds are loose: a sound hash passes them by a wide margin,
    a hash that drops bytes or bits does not. */
#include "am2z_testutil.h"
#include "am2z_hash.h"

#include <stdio.h>
#include <string.h>

START_TEST(test_hash_depends_on_every_byte_length_and_seed)
{
    ck_assert_uint_eq(am2z_hash_bytes(NULL, 0, 7), am2z_hash_bytes("", 0, 7));
    ck_assert_uint_ne(am2z_hash_bytes("", 0, 1), am2z_hash_bytes("", 0, 2));
    char a[41], b[41];
    memset(a, 'k', sizeof a);
    for (size_t n = 1; n <= 40; n++) {
        uint64_t h = am2z_hash_bytes(a, n, 0);
        ck_assert_uint_eq(h, am2z_hash_bytes(a, n, 0));      /* deterministic */
        ck_assert_uint_ne(h, am2z_hash_bytes(a, n - 1, 0));  /* length counts */
        ck_assert_uint_ne(h, am2z_hash_bytes(a, n, 1));      /* seed counts */
        for (size_t i = 0; i < n; i++) {                    /* every byte, tail included */
            memcpy(b, a, n);
            b[i] ^= 1;
            ck_assert_msg(am2z_hash_bytes(b, n, 0) != h, "byte %zu of %zu ignored", i, n);
        }
    }
    char s[] = "job-0123456789abcdef";
    ck_assert_uint_eq(am2z_hash_str(s), (size_t)am2z_hash_bytes(s, strlen(s), 0));
}
END_TEST

/*  Ids like the broker's (a fixed prefix, a counter): 20,000 of them in
    1,021 buckets average 19.6 each; none may hold twice that. Each output
    bit must be set for 45-55 % of them. */
START_TEST(test_hash_spreads_ids_over_buckets_and_bits)
{
    enum { N = 20000, BUCKETS = 1021 };
    static unsigned bucket[BUCKETS];
    unsigned bit[64] = { 0 };
    memset(bucket, 0, sizeof bucket);
    char id[64];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "01JD3S5Q7ZK2N8V6XW4R%06d", i);
        uint64_t h = am2z_hash_str(id);
        bucket[h % BUCKETS]++;
        for (int j = 0; j < 64; j++)
            bit[j] += (unsigned)(h >> j & 1);
    }
    for (int k = 0; k < BUCKETS; k++)
        ck_assert_msg(bucket[k] < 2 * N / BUCKETS, "bucket %d holds %u", k, bucket[k]);
    for (int j = 0; j < 64; j++)
        ck_assert_msg(bit[j] > N * 45 / 100 && bit[j] < N * 55 / 100, "bit %d set %u times", j,
                      bit[j]);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("hash");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_hash_depends_on_every_byte_length_and_seed);
    tcase_add_test(tc, test_hash_spreads_ids_over_buckets_and_bits);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
