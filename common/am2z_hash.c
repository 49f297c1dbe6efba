/*  am2z_hash.c — see am2z_hash.h. */
#include "am2z_hash.h"

#include <string.h>

#define S_K1 0x87c37b91114253d5ull
#define S_K2 0x4cf5ad432745937full

static inline uint64_t
s_rotl(uint64_t x, int r)
{
    return x << r | x >> (64 - r);
}

static inline uint64_t
s_round(uint64_t h, uint64_t w)
{
    h ^= s_rotl(w * S_K1, 31) * S_K2;
    return s_rotl(h, 27) * 5 + 0x52dce729;
}

uint64_t
am2z_hash_bytes(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ (uint64_t)n * S_K2;
    size_t left = n;
    while (left >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = s_round(h, w);
        p += 8;
        left -= 8;
    }
    if (left) {
        uint64_t w = 0;
        memcpy(&w, p, left);
        h = s_round(h, w);
    }
    /* murmur3's fmix64: every input bit reaches every output bit */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

size_t
am2z_hash_str(const void *key)
{
    return (size_t)am2z_hash_bytes(key, strlen(key), 0);
}
