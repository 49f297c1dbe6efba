/*  am2z_sbuf.h — a msgpack-c sbuffer that starts at a size of our choosing.

    msgpack_sbuffer_write allocates MSGPACK_SBUFFER_INIT_SIZE (8 KiB) at the
    first write (a realloc from NULL), for a body that is usually 200-400
    bytes: every encoded message, RESULT splice and job record went through
    one (bench/where-the-time-goes.md, seventeenth pass: 79-86 k reallocs a
    second on the broker's loop thread, 30-33 k after). Starting at the size
    the caller expects keeps the usual body in one small allocation; a
    larger one still grows by doubling.
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
