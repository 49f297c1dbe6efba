/*  am2z_hash.h — a fast non-cryptographic hash for in-memory tables.

    Eight bytes per step (a multiply-rotate round per word, murmur3's
    64-bit finaliser at the end), where czmq's default zhashx hasher and a
    byte-wise FNV take one byte per step: ids of 26-36 characters are the
    keys of the broker's hottest tables. Not stable across versions and not
    for anything stored or sent: seeds and output may change. */
#ifndef AM2Z_HASH_H
#define AM2Z_HASH_H

#include <stddef.h>
#include <stdint.h>

/*  The hash of n bytes at data (NULL allowed when n is 0), mixed with seed;
    all 64 bits are usable (a Bloom filter takes two positions from it). */
uint64_t am2z_hash_bytes(const void *data, size_t n, uint64_t seed);

/*  zhashx_hash_fn for NUL-terminated string keys (zhashx_set_key_hasher). */
size_t am2z_hash_str(const void *key);

#endif
