/*  am2z_mpcheck.h — structural check of untrusted msgpack bytes.

    msgpack-c allocates room for a container as soon as it reads the
    container's declared length, so bytes from a peer that declare a
    four-billion-element array would make it try to allocate tens of GiB.
    Every decoder of peer or user bytes (codec, state, envelope) runs this
    check first: it walks the encoding without allocating and refuses
    anything that is not exactly one well-formed object of bounded depth
    whose declared lengths fit in the bytes that remain.

    Thread safety: reentrant.
*/
#ifndef AM2Z_MPCHECK_H_INCLUDED
#define AM2Z_MPCHECK_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Returns AM2Z_OK when data[0..size) is exactly one msgpack object nested
    no deeper than max_depth (a scalar is depth 0) in which every declared
    str/bin/ext length fits in the remaining bytes and every array/map
    count is at most the remaining bytes (each element takes >= 1 byte).
    Returns AM2Z_EPROTO otherwise (empty input, truncated, trailing bytes,
    the reserved byte 0xc1, too deep, implausible length). */
int am2z_msgpack_check(const uint8_t *data, size_t size, size_t max_depth);

/*  Reads a big-endian unsigned integer of n (<= 8) bytes at p: msgpack's
    length and number fields. */
uint64_t am2z_be_read(const uint8_t *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif
