/*  am2z_envelope.h — versioned records sealed with SHA-256.

    Every record the broker stores (session states, job records, results) is
    wrapped in an envelope, itself one msgpack map:

        { "format":  "am2z.envelope/1",
          "version": uint,        record version (a state's metadata.version)
          "sha256":  bin 32,      SHA-256 (OpenSSL EVP) of the exact payload bytes
          "created": uint ms,     when the record was first written
          "updated": uint ms,     when this version was written
          "payload": bin }        the record bytes

    Decoding verifies everything: an envelope that is not exactly this map,
    has another format, a hash of another length, or a hash that does not
    match the payload is AM2Z_EINTEGRITY — never returned as data. "Exactly"
    is strict: the six keys each once, no other key (an unknown key is
    AM2Z_EINTEGRITY, not ignored), str / unsigned int / bin encodings as
    above, no trailing bytes.

    Thread safety: reentrant; no shared state.
*/
#ifndef AM2Z_ENVELOPE_H_INCLUDED
#define AM2Z_ENVELOPE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AM2Z_ENVELOPE_FORMAT "am2z.envelope/1"
#define AM2Z_SHA256_LEN 32

/*  A decoded envelope. payload points into the bytes that were decoded:
    borrowed, valid as long as those bytes are. */
typedef struct {
    uint64_t version;
    uint64_t created_ms;
    uint64_t updated_ms;
    uint8_t sha256[AM2Z_SHA256_LEN];
    const uint8_t *payload;
    size_t payload_size;
} am2z_envelope_t;

/*  SHA-256 of data[0..size) into out (data may be NULL when size is 0).
    Returns AM2Z_OK, AM2Z_EINVAL or AM2Z_ECRYPTO. */
int am2z_sha256(const uint8_t *data, size_t size, uint8_t out[AM2Z_SHA256_LEN]);

/*  For a program that owns its process (am2z-broker): initialises OpenSSL
    without reading the system's OpenSSL configuration (openssl.cnf, or
    $OPENSSL_CONF). Sealing our own records needs only the default
    provider's SHA-256, and the configuration's loading keeps ≈ 0.6 MB more
    of libcrypto resident (bench/where-the-time-goes.md). Call it before
    anything else uses OpenSSL; a library must not call it, since it decides
    for every OpenSSL user in the process. Returns AM2Z_OK or AM2Z_ECRYPTO. */
int am2z_crypto_init_without_config(void);

/*  Lowercase hex of a digest into out (2 * AM2Z_SHA256_LEN + 1 bytes). */
void am2z_sha256_hex(const uint8_t digest[AM2Z_SHA256_LEN],
                     char out[2 * AM2Z_SHA256_LEN + 1]);

/*  Seals payload into a new envelope. Caller owns *out (free()). Returns
    AM2Z_OK, AM2Z_ECRYPTO, AM2Z_ENOMEM or AM2Z_EINVAL (NULL out pointers,
    NULL payload with a size, payload over 4 GiB - 1: msgpack's bin limit). */
int am2z_envelope_encode(uint64_t version, uint64_t created_ms,
                         uint64_t updated_ms, const uint8_t *payload,
                         size_t payload_size, uint8_t **out, size_t *out_size);

/*  The most bytes an envelope of a payload_size-byte payload takes. */
size_t am2z_envelope_size_max(size_t payload_size);

/*  am2z_envelope_encode into the caller's out[0..capacity), which must hold
    am2z_envelope_size_max(payload_size) bytes; *out_size gets the bytes
    written. Returns AM2Z_OK, AM2Z_ECRYPTO or AM2Z_EINVAL (also for a
    capacity under that bound). */
int am2z_envelope_encode_to(uint64_t version, uint64_t created_ms, uint64_t updated_ms,
                            const uint8_t *payload, size_t payload_size, uint8_t *out,
                            size_t capacity, size_t *out_size);

/*  Decodes and verifies. On AM2Z_OK *env describes the envelope, its payload
    borrowed from data. Returns AM2Z_EINTEGRITY for any malformed envelope or
    hash mismatch, AM2Z_ECRYPTO if OpenSSL fails, AM2Z_EINVAL if env is
    NULL. On error *env is zeroed. */
int am2z_envelope_decode(const uint8_t *data, size_t size, am2z_envelope_t *env);

#ifdef __cplusplus
}
#endif
#endif
