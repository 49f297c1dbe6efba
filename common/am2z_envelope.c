/*  am2z_envelope.c — see am2z_envelope.h.

    Encoding writes the map by hand into one buffer sized up front (payload
    + a fixed bound on the map's overhead): the caller's
    (am2z_envelope_encode_to, e.g. on its stack) or one allocation, and no
    realloc copies for a 1 MiB state.

    Decoding does not use msgpack_unpack: the envelope is a flat map of
    scalars, and walking it by hand lets the payload slice point straight
    into the caller's bytes (borrowed, no zone, no copy). am2z_msgpack_check
    runs first, so every declared length is already known to fit; the
    walker still bounds-checks each read because it is cheap and keeps this
    file safe on its own.

    Strictness: the map must hold exactly the six keys, each once, with
    these encodings — format: str, version/created/updated: unsigned int
    (positive fixint or uint8..uint64, which is what msgpack-c writes for a
    uint64_t), sha256: bin of 32 bytes, payload: bin. Unknown keys, repeated
    keys and other encodings are AM2Z_EINTEGRITY: a stored record that is
    not what we wrote is corrupt, and tolerating variants would only hide it.
*/
#include "am2z_envelope.h"

#include "am2z_error.h"
#include "am2z_mpcheck.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/*  Bytes the map adds around the payload: map header 1, keys 7+8+7+8+8+8,
    format 16, version 9, sha256 2+32, created 9, updated 9, payload header 5
    = 129 at most. Rounded up for headroom. */
#define S_OVERHEAD_MAX 160

/*  OpenSSL 3 resolves a legacy EVP_sha256() to its provider implementation
    on every EVP_Digest call — half the cost of hashing a small record. The
    algorithm is fetched once per process instead; after that the pointer
    is only read (write-once, published by pthread_once), and it is freed
    at exit, before OpenSSL's own cleanup (atexit runs in reverse order).

    EVP_Digest also allocates and frees a digest context per call. Each
    thread keeps one instead (a pthread key: freed when the thread ends;
    the exiting thread's own at exit, with the algorithm), re-initialised
    per digest: 7 digests per job on the broker's hot path. */
static pthread_once_t s_md_once = PTHREAD_ONCE_INIT;
static EVP_MD *s_md;
static pthread_key_t s_ctx_key;
static bool s_ctx_key_ok;

static void
s_ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void
s_md_free(void)
{
    if (s_ctx_key_ok) {
        EVP_MD_CTX *ctx = pthread_getspecific(s_ctx_key);
        if (ctx) {
            pthread_setspecific(s_ctx_key, NULL);
            EVP_MD_CTX_free(ctx);
        }
    }
    EVP_MD_free(s_md);
    s_md = NULL;
}

static void
s_md_fetch(void)
{
    s_ctx_key_ok = pthread_key_create(&s_ctx_key, s_ctx_free) == 0;
    s_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (s_md)
        atexit(s_md_free);
}

/*  This thread's digest context, NULL without one (no key, out of memory,
    or no fetched algorithm: the caller falls back to EVP_Digest). */
static EVP_MD_CTX *
s_ctx(void)
{
    if (!s_ctx_key_ok || !s_md)
        return NULL;
    EVP_MD_CTX *ctx = pthread_getspecific(s_ctx_key);
    if (!ctx && (ctx = EVP_MD_CTX_new()) != NULL && pthread_setspecific(s_ctx_key, ctx) != 0) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

int
am2z_crypto_init_without_config(void)
{
    return OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL) == 1 ? AM2Z_OK : AM2Z_ECRYPTO;
}

int
am2z_sha256(const uint8_t *data, size_t size, uint8_t out[AM2Z_SHA256_LEN])
{
    static const uint8_t empty[1] = { 0 };
    unsigned int len = 0;
    if (!out || (!data && size > 0))
        return AM2Z_EINVAL;
    pthread_once(&s_md_once, s_md_fetch);
    EVP_MD_CTX *ctx = s_ctx();
    int ok = ctx ? EVP_DigestInit_ex2(ctx, s_md, NULL)
                   && EVP_DigestUpdate(ctx, data ? data : empty, size)
                   && EVP_DigestFinal_ex(ctx, out, &len)
                 : EVP_Digest(data ? data : empty, size, out, &len,
                              s_md ? s_md : EVP_sha256(), NULL);
    if (!ok || len != AM2Z_SHA256_LEN)
        return AM2Z_ECRYPTO;
    return AM2Z_OK;
}

void
am2z_sha256_hex(const uint8_t digest[AM2Z_SHA256_LEN],
                char out[2 * AM2Z_SHA256_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < AM2Z_SHA256_LEN; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[2 * AM2Z_SHA256_LEN] = '\0';
}

/* ---------------------------------------------------------------------------
   Encoding
   ------------------------------------------------------------------------ */

/*  The envelope is written by hand: six fixed keys around three numbers,
    a digest and the payload, in the bytes msgpack-c's packer writes for
    them (envelope_test compares the two over every width of every field),
    without a packer call and a sink callback per item. */

/*  Appends v as msgpack_pack_uint64 does: the shortest of positive fixint,
    uint8, uint16, uint32, uint64. */
static uint8_t *
s_put_uint(uint8_t *p, uint64_t v)
{
    size_t w;
    if (v < 0x80) {
        *p++ = (uint8_t)v;
        return p;
    }
    if (v <= 0xff) {
        *p++ = 0xcc;
        w = 1;
    } else if (v <= 0xffff) {
        *p++ = 0xcd;
        w = 2;
    } else if (v <= 0xffffffffu) {
        *p++ = 0xce;
        w = 4;
    } else {
        *p++ = 0xcf;
        w = 8;
    }
    for (size_t i = 0; i < w; i++)
        *p++ = (uint8_t)(v >> (8 * (w - 1 - i)));
    return p;
}

/*  Appends a short key (fixstr). */
#define S_KEY(p, k) (*(p)++ = (uint8_t)(0xa0 | (sizeof(k) - 1)), \
                     memcpy((p), (k), sizeof(k) - 1), (p) += sizeof(k) - 1)

size_t
am2z_envelope_size_max(size_t payload_size)
{
    return payload_size + S_OVERHEAD_MAX;
}

int
am2z_envelope_encode_to(uint64_t version, uint64_t created_ms, uint64_t updated_ms,
                        const uint8_t *payload, size_t payload_size, uint8_t *out,
                        size_t capacity, size_t *out_size)
{
    if (out_size)
        *out_size = 0;
    if (!out || !out_size || (!payload && payload_size > 0) || payload_size > UINT32_MAX
        || capacity < am2z_envelope_size_max(payload_size))
        return AM2Z_EINVAL;
    uint8_t digest[AM2Z_SHA256_LEN];
    int rc = am2z_sha256(payload, payload_size, digest);
    if (rc != AM2Z_OK)
        return rc;

    uint8_t *p = out;
    *p++ = 0x86;                                  /* map of 6 */
    S_KEY(p, "format");
    *p++ = (uint8_t)(0xa0 | (sizeof AM2Z_ENVELOPE_FORMAT - 1));
    memcpy(p, AM2Z_ENVELOPE_FORMAT, sizeof AM2Z_ENVELOPE_FORMAT - 1);
    p += sizeof AM2Z_ENVELOPE_FORMAT - 1;
    S_KEY(p, "version");
    p = s_put_uint(p, version);
    S_KEY(p, "sha256");
    *p++ = 0xc4;                                  /* bin 8 */
    *p++ = AM2Z_SHA256_LEN;
    memcpy(p, digest, AM2Z_SHA256_LEN);
    p += AM2Z_SHA256_LEN;
    S_KEY(p, "created");
    p = s_put_uint(p, created_ms);
    S_KEY(p, "updated");
    p = s_put_uint(p, updated_ms);
    S_KEY(p, "payload");
    size_t w = payload_size <= 0xff ? 1 : payload_size <= 0xffff ? 2 : 4;
    *p++ = w == 1 ? 0xc4 : w == 2 ? 0xc5 : 0xc6;  /* bin 8 / 16 / 32 */
    for (size_t i = 0; i < w; i++)
        *p++ = (uint8_t)(payload_size >> (8 * (w - 1 - i)));
    if (payload_size)
        memcpy(p, payload, payload_size);
    p += payload_size;
    *out_size = (size_t)(p - out);
    return AM2Z_OK;
}

int
am2z_envelope_encode(uint64_t version, uint64_t created_ms,
                     uint64_t updated_ms, const uint8_t *payload,
                     size_t payload_size, uint8_t **out, size_t *out_size)
{
    if (out)
        *out = NULL;
    if (out_size)
        *out_size = 0;
    if (!out || !out_size || (!payload && payload_size > 0)
        || payload_size > UINT32_MAX)
        return AM2Z_EINVAL;
    size_t cap = am2z_envelope_size_max(payload_size);
    uint8_t *buf = malloc(cap);
    if (!buf)
        return AM2Z_ENOMEM;
    int rc = am2z_envelope_encode_to(version, created_ms, updated_ms, payload, payload_size,
                                     buf, cap, out_size);
    if (rc != AM2Z_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    return AM2Z_OK;
}

/* ---------------------------------------------------------------------------
   Decoding
   ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
} s_reader_t;

/*  Reads an n-byte big-endian unsigned; false when the bytes run out. */
static bool
s_read_be(s_reader_t *r, size_t n, uint64_t *v)
{
    if (n > r->size - r->pos)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = (x << 8) | r->data[r->pos + i];
    r->pos += n;
    *v = x;
    return true;
}

static bool
s_read_byte(s_reader_t *r, uint8_t *b)
{
    if (r->pos >= r->size)
        return false;
    *b = r->data[r->pos++];
    return true;
}

/*  Takes len bytes as a borrowed slice. */
static bool
s_read_slice(s_reader_t *r, uint64_t len, const uint8_t **ptr)
{
    if (len > r->size - r->pos)
        return false;
    *ptr = r->data + r->pos;
    r->pos += (size_t)len;
    return true;
}

static bool
s_read_str(s_reader_t *r, const uint8_t **ptr, size_t *len)
{
    uint8_t b;
    uint64_t n;
    if (!s_read_byte(r, &b))
        return false;
    if ((b & 0xe0) == 0xa0)
        n = b & 0x1f;
    else if (b == 0xd9 || b == 0xda || b == 0xdb) {
        if (!s_read_be(r, (size_t)1 << (b - 0xd9), &n))
            return false;
    } else
        return false;
    *len = (size_t)n;
    return s_read_slice(r, n, ptr);
}

static bool
s_read_bin(s_reader_t *r, const uint8_t **ptr, size_t *len)
{
    uint8_t b;
    uint64_t n;
    if (!s_read_byte(r, &b) || b < 0xc4 || b > 0xc6)
        return false;
    if (!s_read_be(r, (size_t)1 << (b - 0xc4), &n))
        return false;
    *len = (size_t)n;
    return s_read_slice(r, n, ptr);
}

static bool
s_read_uint(s_reader_t *r, uint64_t *v)
{
    uint8_t b;
    if (!s_read_byte(r, &b))
        return false;
    if (b <= 0x7f) {
        *v = b;
        return true;
    }
    if (b < 0xcc || b > 0xcf)
        return false;
    return s_read_be(r, (size_t)1 << (b - 0xcc), v);
}

static bool
s_read_map_header(s_reader_t *r, uint64_t *count)
{
    uint8_t b;
    if (!s_read_byte(r, &b))
        return false;
    if ((b & 0xf0) == 0x80) {
        *count = b & 0x0f;
        return true;
    }
    if (b == 0xde)
        return s_read_be(r, 2, count);
    if (b == 0xdf)
        return s_read_be(r, 4, count);
    return false;
}

static bool
s_key_is(const uint8_t *key, size_t len, const char *name)
{
    return len == strlen(name) && memcmp(key, name, len) == 0;
}

enum {
    S_F_FORMAT = 1 << 0,
    S_F_VERSION = 1 << 1,
    S_F_SHA = 1 << 2,
    S_F_CREATED = 1 << 3,
    S_F_UPDATED = 1 << 4,
    S_F_PAYLOAD = 1 << 5,
    S_F_ALL = (1 << 6) - 1
};

int
am2z_envelope_decode(const uint8_t *data, size_t size, am2z_envelope_t *env)
{
    if (!env)
        return AM2Z_EINVAL;
    memset(env, 0, sizeof *env);
    /*  Depth 1: a map of scalars. This also rejects trailing bytes. */
    if (am2z_msgpack_check(data, size, 1) != AM2Z_OK)
        return AM2Z_EINTEGRITY;

    s_reader_t r = { data, size, 0 };
    uint64_t count;
    if (!s_read_map_header(&r, &count) || count != 6)
        return AM2Z_EINTEGRITY;

    unsigned seen = 0;
    const uint8_t *format = NULL, *sha = NULL, *payload = NULL;
    size_t format_len = 0, sha_len = 0, payload_len = 0;
    am2z_envelope_t e = { 0 };
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *key;
        size_t klen;
        unsigned field;
        bool ok;
        if (!s_read_str(&r, &key, &klen))
            return AM2Z_EINTEGRITY;
        if (s_key_is(key, klen, "format")) {
            field = S_F_FORMAT;
            ok = s_read_str(&r, &format, &format_len);
        } else if (s_key_is(key, klen, "version")) {
            field = S_F_VERSION;
            ok = s_read_uint(&r, &e.version);
        } else if (s_key_is(key, klen, "sha256")) {
            field = S_F_SHA;
            ok = s_read_bin(&r, &sha, &sha_len);
        } else if (s_key_is(key, klen, "created")) {
            field = S_F_CREATED;
            ok = s_read_uint(&r, &e.created_ms);
        } else if (s_key_is(key, klen, "updated")) {
            field = S_F_UPDATED;
            ok = s_read_uint(&r, &e.updated_ms);
        } else if (s_key_is(key, klen, "payload")) {
            field = S_F_PAYLOAD;
            ok = s_read_bin(&r, &payload, &payload_len);
        } else
            return AM2Z_EINTEGRITY;       /* unknown key */
        if (!ok || (seen & field))
            return AM2Z_EINTEGRITY;       /* wrong type or repeated key */
        seen |= field;
    }
    /*  Six keys, each known and none repeated, so all six are present. */
    if (seen != S_F_ALL)
        return AM2Z_EINTEGRITY;
    if (r.pos != size)
        return AM2Z_EINTEGRITY;
    if (!s_key_is(format, format_len, AM2Z_ENVELOPE_FORMAT))
        return AM2Z_EINTEGRITY;
    if (sha_len != AM2Z_SHA256_LEN)
        return AM2Z_EINTEGRITY;

    uint8_t digest[AM2Z_SHA256_LEN];
    int rc = am2z_sha256(payload, payload_len, digest);
    if (rc != AM2Z_OK)
        return rc;
    if (CRYPTO_memcmp(digest, sha, AM2Z_SHA256_LEN) != 0)
        return AM2Z_EINTEGRITY;

    memcpy(e.sha256, sha, AM2Z_SHA256_LEN);
    e.payload = payload;
    e.payload_size = payload_len;
    *env = e;
    return AM2Z_OK;
}
