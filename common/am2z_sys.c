/*  am2z_sys.c — see am2z_sys.h. */
#include "am2z_sys.h"

#include "am2z_error.h"

#include <czmq.h>
#include <sys/resource.h>

int
am2z_sys_raise_limits(uint64_t *fds)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return AM2Z_EIO;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    /*  libzmq's own cap (ZMQ_MAX_SOCKETS, default 1,023): 0 asks CZMQ for
        the most the process may have. Must precede the first socket. */
    zsys_set_max_sockets(0);
    if (fds)
        *fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    return AM2Z_OK;
}
