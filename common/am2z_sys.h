/*  am2z_sys.h — process set-up shared by the daemons (am2z-broker, workers).

    Every ZeroMQ socket is a file descriptor (and libzmq caps sockets at
    1,023 by default), and a worker runs one socket per actor thread, so a
    worker with many processors × a high concurrency runs out long before
    the machine does. Daemons call this first thing, before any socket.

    Thread safety: call once, from main, before other threads start.
*/
#ifndef AM2Z_SYS_H_INCLUDED
#define AM2Z_SYS_H_INCLUDED

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Raises the open-file soft limit to the hard limit and lets libzmq use
    as many sockets as that allows. *fds (may be NULL) receives the
    resulting soft limit. Returns AM2Z_OK, or AM2Z_EIO when the limit could
    not be read (nothing changed). */
int am2z_sys_raise_limits(uint64_t *fds);

#ifdef __cplusplus
}
#endif
#endif
