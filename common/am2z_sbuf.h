/*  am2z_sbuf.h — a msgpack-c sbuffer that starts at a size of our choosing.

    msgpack_sbuffer_write allocates MSGPACK_SBUFFER_INIT_SIZE (8 KiB) at the
    first write. glibc serves any request above 1 KiB from its large bins,
    and such a request first consolidates every small freed chunk waiting in
    the fast bins: one per encoded message was a steady malloc_consolidate +
    unlink_chunk cost in the broker's loop (bench/where-the-time-goes.md,
    seventeenth pass). Starting at the size the caller expects keeps the
    usual body in a small allocation; a larger one still grows by doubling.
*/
#ifndef AM2Z_SBUF_H
#define AM2Z_SBUF_H

#include <msgpack.h>
#include <stdlib.h>

/*  msgpack_sbuffer_init, then room for cap bytes (0: msgpack-c's default,
    allocated at the first write). Without memory it starts empty, as
    msgpack_sbuffer_init leaves it: the first write then tries again. */
static inline void
am2z_sbuf_init(msgpack_sbuffer *sb, size_t cap)
{
    msgpack_sbuffer_init(sb);
    if (cap && (sb->data = malloc(cap)) != NULL)
        sb->alloc = cap;
}

#endif
