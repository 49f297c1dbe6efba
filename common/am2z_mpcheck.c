/*  am2z_mpcheck.c — see am2z_mpcheck.h.

    Walks the msgpack encoding (spec: msgpack/spec.md "Formats") with an
    explicit count of objects still expected, so depth costs no stack:
    `pending` counts the values still to read; a container replaces its own
    slot with its element count (maps count twice). Depth is tracked with a
    small stack of remaining counts per open container.
*/
#include "am2z_mpcheck.h"

#include "am2z_error.h"

#include <stdbool.h>
#include <string.h>


uint64_t
am2z_be_read(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

int
am2z_msgpack_check(const uint8_t *data, size_t size, size_t max_depth)
{
    if (!data || size == 0)
        return AM2Z_EPROTO;
    if (max_depth > 256)
        max_depth = 256;

    /*  left[d] = values still to read in the container open at depth d;
        depth 0 is the top level, which expects exactly one value. */
    uint64_t left[257];
    size_t depth = 0;
    left[0] = 1;
    size_t pos = 0;

    while (true) {
        while (left[depth] == 0) {
            if (depth == 0)
                return pos == size ? AM2Z_OK : AM2Z_EPROTO;
            depth--;
        }
        if (pos >= size)
            return AM2Z_EPROTO;
        left[depth]--;

        uint8_t b = data[pos++];
        size_t remain = size - pos;
        uint64_t skip = 0;           /* payload bytes after the header */
        uint64_t children = 0;       /* values a container holds */
        bool container = false;
        size_t hdr = 0;              /* length bytes after the type byte */

        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, negative fixint, nil, false, true */
        } else if ((b & 0xe0) == 0xa0) {
            skip = b & 0x1f;                            /* fixstr */
        } else if ((b & 0xf0) == 0x90) {
            children = b & 0x0f; container = true;      /* fixarray */
        } else if ((b & 0xf0) == 0x80) {
            children = 2 * (uint64_t)(b & 0x0f); container = true;   /* fixmap */
        } else {
            switch (b) {
            case 0xc1: return AM2Z_EPROTO;              /* never used */
            case 0xc4: case 0xd9: hdr = 1; break;       /* bin8, str8 */
            case 0xc5: case 0xda: hdr = 2; break;       /* bin16, str16 */
            case 0xc6: case 0xdb: hdr = 4; break;       /* bin32, str32 */
            case 0xc7: hdr = 1; skip = 1; break;        /* ext8 (+type) */
            case 0xc8: hdr = 2; skip = 1; break;        /* ext16 */
            case 0xc9: hdr = 4; skip = 1; break;        /* ext32 */
            case 0xca: skip = 4; break;                 /* float32 */
            case 0xcb: skip = 8; break;                 /* float64 */
            case 0xcc: case 0xd0: skip = 1; break;      /* uint8, int8 */
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                 /* fixext1 (+type) */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: hdr = 2; container = true; break; /* array16 */
            case 0xdd: hdr = 4; container = true; break; /* array32 */
            case 0xde: hdr = 2; container = true; break; /* map16 */
            case 0xdf: hdr = 4; container = true; break; /* map32 */
            default:   return AM2Z_EPROTO;
            }
            if (hdr) {
                if (remain < hdr)
                    return AM2Z_EPROTO;
                uint64_t n = am2z_be_read(data + pos, hdr);
                pos += hdr;
                remain -= hdr;
                if (container)
                    children = (b == 0xde || b == 0xdf) ? 2 * n : n;
                else
                    skip += n;
            }
        }
        if (skip > remain)
            return AM2Z_EPROTO;
        pos += (size_t)skip;
        if (container && children > 0) {
            /* each child needs at least one byte */
            if (children > size - pos)
                return AM2Z_EPROTO;
            if (depth + 1 > max_depth)
                return AM2Z_EPROTO;
            left[++depth] = children;
        } else if (container && depth + 1 > max_depth) {
            return AM2Z_EPROTO;
        }
    }
}
