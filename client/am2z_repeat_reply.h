/*  am2z_repeat_reply.h — private: decodes the REPLY of QUERY what=repeats
    into an am2z_repeat_list_t (issue 6). A client codec file, like
    am2z_reply.c: validated (am2z_msgpack_check) before unpacking, copied
    into owned memory.

    Thread safety: reentrant.
*/
#ifndef AM2Z_REPEAT_REPLY_H_INCLUDED
#define AM2Z_REPEAT_REPLY_H_INCLUDED

#include "am2z_client.h"

#include <stddef.h>
#include <stdint.h>

/*  repeats: [{id, proc, session, every, limit, runs, next, created, last?}].
    Caller owns *out. Returns AM2Z_OK, AM2Z_EPROTO (err explains),
    AM2Z_ENOMEM. */
int am2z_repeat_reply_decode(const uint8_t *data, size_t size, am2z_repeat_list_t **out,
                             char *err, size_t err_size);

#endif
