/*  envelope_test.c — Check suite "envelope": sealing records with SHA-256
    and refusing every kind of damaged envelope. */
#include "am2z_envelope.h"
#include "am2z_error.h"
#include "am2z_testutil.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*  Field indexes for the hand-built envelopes below. */
enum { F_FORMAT, F_VERSION, F_SHA, F_CREATED, F_UPDATED, F_PAYLOAD, F_COUNT };
static const char *const s_keys[F_COUNT] = {
    "format", "version", "sha256", "created", "updated", "payload"
};

/*  How to damage a hand-built envelope; s_opts_default() builds a good one. */
typedef struct {
    const char *format;   /* value of "format" */
    size_t sha_len;       /* bytes of "sha256" (digest, zero padded) */
    int omit;             /* field left out, or -1 */
    int dup;              /* field written twice, or -1 */
    int wrong_type;       /* field written with another msgpack type, or -1 */
    int extra;            /* add an unknown key */
} s_opts_t;

static s_opts_t
s_opts_default(void)
{
    s_opts_t o = { AM2Z_ENVELOPE_FORMAT, AM2Z_SHA256_LEN, -1, -1, -1, 0 };
    return o;
}

static void
s_pack_s(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

static void
s_pack_field(msgpack_packer *pk, int f, const s_opts_t *o,
             const uint8_t *digest, const uint8_t *payload, size_t size)
{
    bool wrong = f == o->wrong_type;
    s_pack_s(pk, s_keys[f], strlen(s_keys[f]));
    switch (f) {
    case F_FORMAT:
        if (wrong) {
            msgpack_pack_bin(pk, strlen(o->format));
            msgpack_pack_bin_body(pk, o->format, strlen(o->format));
        } else
            s_pack_s(pk, o->format, strlen(o->format));
        break;
    case F_VERSION:
        if (wrong)
            s_pack_s(pk, "7", 1);
        else
            msgpack_pack_uint64(pk, 7);
        break;
    case F_SHA: {
        uint8_t buf[64] = { 0 };
        memcpy(buf, digest, AM2Z_SHA256_LEN);
        if (wrong)
            s_pack_s(pk, (const char *)buf, o->sha_len);
        else {
            msgpack_pack_bin(pk, o->sha_len);
            msgpack_pack_bin_body(pk, buf, o->sha_len);
        }
        break;
    }
    case F_CREATED:
        if (wrong)
            msgpack_pack_int64(pk, -5);
        else
            msgpack_pack_uint64(pk, 1000);
        break;
    case F_UPDATED:
        if (wrong)
            msgpack_pack_nil(pk);
        else
            msgpack_pack_uint64(pk, 2000);
        break;
    case F_PAYLOAD:
        if (wrong)
            s_pack_s(pk, (const char *)payload, size);
        else {
            msgpack_pack_bin(pk, size);
            msgpack_pack_bin_body(pk, payload, size);
        }
        break;
    }
}

/*  Builds an envelope by hand with msgpack-c. Caller frees sbuf. */
static void
s_build(const s_opts_t *o, const uint8_t *payload, size_t size,
        msgpack_sbuffer *sbuf)
{
    uint8_t digest[AM2Z_SHA256_LEN];
    ck_assert_int_eq(am2z_sha256(payload, size, digest), AM2Z_OK);
    msgpack_sbuffer_init(sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    size_t n = F_COUNT - (o->omit >= 0) + (o->dup >= 0) + (o->extra ? 1 : 0);
    msgpack_pack_map(&pk, n);
    for (int f = 0; f < F_COUNT; f++) {
        if (f == o->omit)
            continue;
        s_pack_field(&pk, f, o, digest, payload, size);
        if (f == o->dup)
            s_pack_field(&pk, f, o, digest, payload, size);
    }
    if (o->extra) {
        s_pack_s(&pk, "extra", 5);
        msgpack_pack_uint64(&pk, 1);
    }
}

static int
s_decode_built(const s_opts_t *o)
{
    static const uint8_t payload[] = "{\"hello\": \"world\"}";
    msgpack_sbuffer sbuf;
    s_build(o, payload, sizeof payload - 1, &sbuf);
    am2z_envelope_t env;
    int rc = am2z_envelope_decode((const uint8_t *)sbuf.data, sbuf.size, &env);
    msgpack_sbuffer_destroy(&sbuf);
    return rc;
}

START_TEST(test_sha256_known_vector)
{
    uint8_t d[AM2Z_SHA256_LEN];
    char hex[2 * AM2Z_SHA256_LEN + 1];
    ck_assert_int_eq(am2z_sha256((const uint8_t *)"abc", 3, d), AM2Z_OK);
    am2z_sha256_hex(d, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ck_assert_int_eq(am2z_sha256(NULL, 0, d), AM2Z_OK);
    am2z_sha256_hex(d, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ck_assert_int_eq(am2z_sha256(NULL, 1, d), AM2Z_EINVAL);
}
END_TEST

/*  The case runs in its own process (CK_FORK=yes): OpenSSL is initialised
    once per process, and the runner has not touched it. */
static bool
s_forked(void)
{
    const char *fork_mode = getenv("CK_FORK");
    return !fork_mode || strcmp(fork_mode, "no") != 0;
}

START_TEST(test_sha256_ignores_openssl_config_when_told)
{
    if (!s_forked())
        return;
    char path[512];
    setenv("OPENSSL_CONF", am2z_test_openssl_base_only("envelope", path, sizeof path), 1);
    ck_assert_int_eq(am2z_crypto_init_without_config(), AM2Z_OK);
    uint8_t d[AM2Z_SHA256_LEN];
    char hex[2 * AM2Z_SHA256_LEN + 1];
    ck_assert_int_eq(am2z_sha256((const uint8_t *)"abc", 3, d), AM2Z_OK);
    am2z_sha256_hex(d, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    unlink(path);
}
END_TEST

/*  The control: without the call, the same configuration is read, and
    SHA-256 is refused, so the case above shows the file was not read. */
START_TEST(test_sha256_reads_openssl_config_by_default)
{
    if (!s_forked())
        return;
    char path[512];
    setenv("OPENSSL_CONF", am2z_test_openssl_base_only("envelope", path, sizeof path), 1);
    uint8_t d[AM2Z_SHA256_LEN];
    ck_assert_int_eq(am2z_sha256((const uint8_t *)"abc", 3, d), AM2Z_ECRYPTO);
    unlink(path);
}
END_TEST

START_TEST(test_envelope_round_trip_borrows_payload)
{
    /*  Sizes that take each bin header: bin8, bin16, bin32. */
    const size_t sizes[] = { 0, 1, 31, 255, 256, 300, 65535, 65536, 70000 };
    uint64_t seed = 42;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        uint8_t *payload = malloc(n ? n : 1);
        am2z_test_random_bytes(&seed, payload, n);
        uint8_t *sealed = NULL;
        size_t sealed_size = 0;
        ck_assert_int_eq(am2z_envelope_encode(UINT64_MAX - i, 1700000000000ull,
                                              1700000000123ull + i, payload, n,
                                              &sealed, &sealed_size), AM2Z_OK);
        ck_assert_uint_le(sealed_size, n + 160);
        am2z_envelope_t env;
        ck_assert_int_eq(am2z_envelope_decode(sealed, sealed_size, &env), AM2Z_OK);
        ck_assert_uint_eq(env.version, UINT64_MAX - i);
        ck_assert_uint_eq(env.created_ms, 1700000000000ull);
        ck_assert_uint_eq(env.updated_ms, 1700000000123ull + i);
        ck_assert_uint_eq(env.payload_size, n);
        /*  Borrowed: the slice lies inside the sealed bytes, at their end. */
        ck_assert(env.payload >= sealed && env.payload + n == sealed + sealed_size);
        if (n)
            ck_assert_mem_eq(env.payload, payload, n);
        uint8_t d[AM2Z_SHA256_LEN];
        am2z_sha256(payload, n, d);
        ck_assert_mem_eq(env.sha256, d, AM2Z_SHA256_LEN);
        free(sealed);
        free(payload);
    }
}
END_TEST

START_TEST(test_envelope_encode_rejects_bad_arguments)
{
    uint8_t *out = (uint8_t *)1;
    size_t size = 1;
    ck_assert_int_eq(am2z_envelope_encode(1, 1, 1, NULL, 5, &out, &size), AM2Z_EINVAL);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(am2z_envelope_encode(1, 1, 1, NULL, 0, NULL, &size), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_envelope_encode(1, 1, 1, NULL, 0, &out, &size), AM2Z_OK);
    free(out);
    ck_assert_int_eq(am2z_envelope_decode(NULL, 0, NULL), AM2Z_EINVAL);
}
END_TEST

/*  The envelope is written by hand: it must be, byte for byte, what
    msgpack-c's packer writes for the same six fields, for numbers at every
    width boundary and payloads of every bin header width. Data dirs
    written by the packer keep decoding, and the decoder's strictness
    (shortest encodings) is what both produce. */
static void
s_packer_envelope(msgpack_sbuffer *sb, uint64_t version, uint64_t created, uint64_t updated,
                  const uint8_t *payload, size_t n)
{
    uint8_t digest[AM2Z_SHA256_LEN];
    ck_assert_int_eq(am2z_sha256(payload, n, digest), AM2Z_OK);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    const uint64_t nums[3] = { version, created, updated };
    for (int f = 0; f < F_COUNT; f++) {
        msgpack_pack_str(&pk, strlen(s_keys[f]));
        msgpack_pack_str_body(&pk, s_keys[f], strlen(s_keys[f]));
        if (f == F_FORMAT) {
            msgpack_pack_str(&pk, strlen(AM2Z_ENVELOPE_FORMAT));
            msgpack_pack_str_body(&pk, AM2Z_ENVELOPE_FORMAT, strlen(AM2Z_ENVELOPE_FORMAT));
        } else if (f == F_SHA) {
            msgpack_pack_bin(&pk, AM2Z_SHA256_LEN);
            msgpack_pack_bin_body(&pk, digest, AM2Z_SHA256_LEN);
        } else if (f == F_PAYLOAD) {
            msgpack_pack_bin(&pk, n);
            msgpack_pack_bin_body(&pk, payload, n);
        } else {
            msgpack_pack_uint64(&pk, nums[f == F_VERSION ? 0 : f == F_CREATED ? 1 : 2]);
        }
    }
}

START_TEST(test_envelope_bytes_are_what_msgpack_c_packs)
{
    static const uint64_t nums[] = { 0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000,
                                     0xffffffffull, 0x100000000ull, 1732500000000ull,
                                     UINT64_MAX };
    static const size_t sizes[] = { 0, 1, 255, 256, 65535, 65536, 70000 };
    uint8_t *payload = malloc(70000);
    ck_assert_ptr_nonnull(payload);
    for (size_t i = 0; i < 70000; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    size_t nn = sizeof nums / sizeof nums[0];
    for (size_t a = 0; a < nn; a++)
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            uint64_t v = nums[a], c = nums[(a + 3) % nn], u = nums[(a + 7) % nn];
            size_t n = sizes[z];
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            s_packer_envelope(&sb, v, c, u, payload, n);
            uint8_t *out;
            size_t size;
            ck_assert_int_eq(am2z_envelope_encode(v, c, u, payload, n, &out, &size), AM2Z_OK);
            ck_assert_uint_eq(size, sb.size);
            ck_assert_msg(memcmp(out, sb.data, size) == 0, "version %llu, payload %zu",
                          (unsigned long long)v, n);
            ck_assert_uint_le(size, am2z_envelope_size_max(n));
            /* into the caller's buffer: the same bytes; too small: refused */
            size_t cap = am2z_envelope_size_max(n), got = 1;
            uint8_t *buf = malloc(cap);
            ck_assert_int_eq(am2z_envelope_encode_to(v, c, u, payload, n, buf, cap, &got),
                             AM2Z_OK);
            ck_assert_uint_eq(got, size);
            ck_assert(memcmp(buf, out, size) == 0);
            ck_assert_int_eq(am2z_envelope_encode_to(v, c, u, payload, n, buf, cap - 1, &got),
                             AM2Z_EINVAL);
            ck_assert_uint_eq(got, 0);
            am2z_envelope_t env;
            ck_assert_int_eq(am2z_envelope_decode(out, size, &env), AM2Z_OK);
            ck_assert_uint_eq(env.version, v);
            ck_assert_uint_eq(env.created_ms, c);
            ck_assert_uint_eq(env.updated_ms, u);
            ck_assert_uint_eq(env.payload_size, n);
            free(buf);
            free(out);
            msgpack_sbuffer_destroy(&sb);
        }
    free(payload);
}
END_TEST

/*  Seals a fixed record for the corruption tests. */
static void
s_seal(uint8_t **sealed, size_t *size, const uint8_t **payload_at, size_t *payload_size)
{
    static const uint8_t payload[] =
        "\x82\xa8metadata\x81\xa7version\x03\xa5" "count\xcd\x01\x00 and some more bytes";
    ck_assert_int_eq(am2z_envelope_encode(0x1122334455667788ull, 0x0102030405060708ull,
                                          0x0a0b0c0d0e0f1011ull, payload,
                                          sizeof payload - 1, sealed, size), AM2Z_OK);
    am2z_envelope_t env;
    ck_assert_int_eq(am2z_envelope_decode(*sealed, *size, &env), AM2Z_OK);
    *payload_at = env.payload;
    *payload_size = env.payload_size;
}

START_TEST(test_envelope_detects_every_payload_byte_flip)
{
    uint8_t *sealed;
    size_t size, psize;
    const uint8_t *p;
    s_seal(&sealed, &size, &p, &psize);
    size_t off = (size_t)(p - sealed);
    const uint8_t masks[] = { 0x01, 0x80, 0xff };
    for (size_t i = off; i < off + psize; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            sealed[i] ^= masks[m];
            am2z_envelope_t env;
            ck_assert_int_eq(am2z_envelope_decode(sealed, size, &env), AM2Z_EINTEGRITY);
            ck_assert_ptr_null(env.payload);
            sealed[i] ^= masks[m];
        }
    }
    free(sealed);
}
END_TEST

/*  Positions of the 8 value bytes of an unsigned field, which the hash does
    not cover (a flip there is a different, valid envelope). */
static size_t
s_uint_value_at(const uint8_t *sealed, size_t size, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 2 < size; i++)
        if (sealed[i] == (0xa0 | klen) && memcmp(sealed + i + 1, key, klen) == 0) {
            ck_assert_uint_eq(sealed[i + 1 + klen], 0xcf);
            return i + 1 + klen + 1;
        }
    ck_abort_msg("key %s not found", key);
    return 0;
}

START_TEST(test_envelope_detects_flips_anywhere_but_the_unhashed_numbers)
{
    uint8_t *sealed;
    size_t size, psize;
    const uint8_t *p;
    s_seal(&sealed, &size, &p, &psize);
    size_t skip[3] = {
        s_uint_value_at(sealed, size, "version"),
        s_uint_value_at(sealed, size, "created"),
        s_uint_value_at(sealed, size, "updated"),
    };
    const uint8_t masks[] = { 0x01, 0x02, 0x10, 0x80, 0xff };
    for (size_t i = 0; i < size; i++) {
        bool unhashed = false;
        for (int s = 0; s < 3; s++)
            unhashed |= i >= skip[s] && i < skip[s] + 8;
        if (unhashed)
            continue;
        for (size_t m = 0; m < sizeof masks; m++) {
            sealed[i] ^= masks[m];
            am2z_envelope_t env;
            ck_assert_msg(am2z_envelope_decode(sealed, size, &env) == AM2Z_EINTEGRITY,
                          "flip 0x%02x at %zu not detected", masks[m], i);
            sealed[i] ^= masks[m];
        }
    }
    free(sealed);
}
END_TEST

START_TEST(test_envelope_detects_hash_flip)
{
    uint8_t *sealed;
    size_t size, psize;
    const uint8_t *p;
    s_seal(&sealed, &size, &p, &psize);
    am2z_envelope_t env;
    ck_assert_int_eq(am2z_envelope_decode(sealed, size, &env), AM2Z_OK);
    /*  The digest bytes follow "\xa6sha256\xc4\x20". */
    uint8_t *h = memmem(sealed, size, "\xa6sha256\xc4\x20", 9);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < AM2Z_SHA256_LEN; i++) {
        h[9 + i] ^= 0x01;
        ck_assert_int_eq(am2z_envelope_decode(sealed, size, &env), AM2Z_EINTEGRITY);
        h[9 + i] ^= 0x01;
    }
    free(sealed);
}
END_TEST

START_TEST(test_envelope_detects_truncation_at_every_length)
{
    uint8_t *sealed;
    size_t size, psize;
    const uint8_t *p;
    s_seal(&sealed, &size, &p, &psize);
    for (size_t n = 0; n < size; n++) {
        /*  A fresh copy of exactly n bytes, so ASan sees any overread. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, sealed, n);
        am2z_envelope_t env;
        ck_assert_int_eq(am2z_envelope_decode(n ? cut : NULL, n, &env), AM2Z_EINTEGRITY);
        free(cut);
    }
    free(sealed);
}
END_TEST

START_TEST(test_envelope_rejects_trailing_bytes)
{
    uint8_t *sealed;
    size_t size, psize;
    const uint8_t *p;
    s_seal(&sealed, &size, &p, &psize);
    uint8_t *longer = malloc(size + 1);
    memcpy(longer, sealed, size);
    const uint8_t tails[] = { 0xc0, 0x00, 0x86 };
    for (size_t t = 0; t < sizeof tails; t++) {
        longer[size] = tails[t];
        am2z_envelope_t env;
        ck_assert_int_eq(am2z_envelope_decode(longer, size + 1, &env), AM2Z_EINTEGRITY);
    }
    free(longer);
    free(sealed);
}
END_TEST

START_TEST(test_envelope_hand_built_good_one_decodes)
{
    /*  Proves the builder used by the negative cases below is faithful. */
    s_opts_t o = s_opts_default();
    ck_assert_int_eq(s_decode_built(&o), AM2Z_OK);
}
END_TEST

START_TEST(test_envelope_rejects_wrong_format)
{
    const char *formats[] = { "am2z.envelope/2", "", "AM2Z.ENVELOPE/1",
                              "am2z.envelope/1 ", "am2z.envelope/" };
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        s_opts_t o = s_opts_default();
        o.format = formats[i];
        ck_assert_int_eq(s_decode_built(&o), AM2Z_EINTEGRITY);
    }
}
END_TEST

START_TEST(test_envelope_rejects_missing_field)
{
    for (int f = 0; f < F_COUNT; f++) {
        s_opts_t o = s_opts_default();
        o.omit = f;
        ck_assert_msg(s_decode_built(&o) == AM2Z_EINTEGRITY, "missing %s", s_keys[f]);
        /*  Missing one but padded back to six keys with an unknown one. */
        o.extra = 1;
        ck_assert_msg(s_decode_built(&o) == AM2Z_EINTEGRITY, "swapped %s", s_keys[f]);
        /*  Missing one, another repeated: still six keys. */
        o.extra = 0;
        o.dup = (f + 1) % F_COUNT;
        ck_assert_msg(s_decode_built(&o) == AM2Z_EINTEGRITY, "dup for %s", s_keys[f]);
    }
}
END_TEST

START_TEST(test_envelope_rejects_wrong_field_type)
{
    for (int f = 0; f < F_COUNT; f++) {
        s_opts_t o = s_opts_default();
        o.wrong_type = f;
        ck_assert_msg(s_decode_built(&o) == AM2Z_EINTEGRITY, "wrong type %s", s_keys[f]);
    }
}
END_TEST

START_TEST(test_envelope_rejects_extra_or_repeated_keys)
{
    s_opts_t o = s_opts_default();
    o.extra = 1;
    ck_assert_int_eq(s_decode_built(&o), AM2Z_EINTEGRITY);
    o = s_opts_default();
    o.dup = F_PAYLOAD;
    ck_assert_int_eq(s_decode_built(&o), AM2Z_EINTEGRITY);
}
END_TEST

START_TEST(test_envelope_rejects_hash_of_wrong_length)
{
    const size_t lens[] = { 0, 1, 31, 33, 64 };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        s_opts_t o = s_opts_default();
        o.sha_len = lens[i];
        ck_assert_msg(s_decode_built(&o) == AM2Z_EINTEGRITY, "sha len %zu", lens[i]);
    }
}
END_TEST

START_TEST(test_envelope_rejects_random_garbage)
{
    uint64_t seed = 7;
    uint8_t buf[512];
    for (int i = 0; i < 20000; i++) {
        uint8_t len8;
        am2z_test_random_bytes(&seed, &len8, 1);
        size_t n = (size_t)len8 * 2;
        am2z_test_random_bytes(&seed, buf, n);
        /*  Half the time start like a six-key map to get past the first byte. */
        if (n > 0 && (i & 1))
            buf[0] = 0x86;
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, buf, n);
        am2z_envelope_t env;
        ck_assert_int_eq(am2z_envelope_decode(exact, n, &env), AM2Z_EINTEGRITY);
        free(exact);
    }
}
END_TEST

START_TEST(test_envelope_rejects_other_msgpack_objects)
{
    const char *objs[] = {
        "\xc0", "\x90", "\x80", "\xa3" "abc", "\x96\x01\x02\x03\x04\x05\x06",
        "\x81\xa6" "format\xaf" "am2z.envelope/1",
        "\x86\x01\x01\x02\x02\x03\x03\x04\x04\x05\x05\x06\x06",
    };
    for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++) {
        am2z_envelope_t env;
        ck_assert_int_eq(am2z_envelope_decode((const uint8_t *)objs[i], strlen(objs[i]), &env),
                         AM2Z_EINTEGRITY);
    }
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("envelope");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sha256_known_vector);
    tcase_add_test(tc, test_sha256_ignores_openssl_config_when_told);
    tcase_add_test(tc, test_sha256_reads_openssl_config_by_default);
    tcase_add_test(tc, test_envelope_round_trip_borrows_payload);
    tcase_add_test(tc, test_envelope_encode_rejects_bad_arguments);
    tcase_add_test(tc, test_envelope_bytes_are_what_msgpack_c_packs);
    tcase_add_test(tc, test_envelope_detects_every_payload_byte_flip);
    tcase_add_test(tc, test_envelope_detects_flips_anywhere_but_the_unhashed_numbers);
    tcase_add_test(tc, test_envelope_detects_hash_flip);
    tcase_add_test(tc, test_envelope_detects_truncation_at_every_length);
    tcase_add_test(tc, test_envelope_rejects_trailing_bytes);
    tcase_add_test(tc, test_envelope_hand_built_good_one_decodes);
    tcase_add_test(tc, test_envelope_rejects_wrong_format);
    tcase_add_test(tc, test_envelope_rejects_missing_field);
    tcase_add_test(tc, test_envelope_rejects_wrong_field_type);
    tcase_add_test(tc, test_envelope_rejects_extra_or_repeated_keys);
    tcase_add_test(tc, test_envelope_rejects_hash_of_wrong_length);
    tcase_add_test(tc, test_envelope_rejects_random_garbage);
    tcase_add_test(tc, test_envelope_rejects_other_msgpack_objects);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
