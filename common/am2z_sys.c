/*  am2z_sys.c — see am2z_sys.h. */
#include "am2z_sys.h"

#include "am2z_error.h"

#include <czmq.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <unistd.h>

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

/*  Reads a CPU number at *p (digits only), advancing *p. */
static bool
s_cpu_number(const char **p, unsigned long *out)
{
    if (**p < '0' || **p > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(*p, &end, 10);
    if (errno || v >= CPU_SETSIZE)
        return false;
    *p = end;
    *out = v;
    return true;
}

int
am2z_sys_set_cpus(const char *list, char *err, size_t err_size)
{
    char scratch[8];
    if (!err || !err_size) {
        err = scratch;
        err_size = sizeof scratch;
    }
    err[0] = '\0';
    if (!list || !*list)
        return AM2Z_OK;
    cpu_set_t set;
    CPU_ZERO(&set);
    const char *p = list;
    while (true) {
        unsigned long lo, hi;
        if (!s_cpu_number(&p, &lo)) {
            snprintf(err, err_size, "cpus '%s': expected a CPU number (0-%d) at '%s'", list,
                     CPU_SETSIZE - 1, p);
            return AM2Z_ECONFIG;
        }
        hi = lo;
        if (*p == '-') {
            p++;
            if (!s_cpu_number(&p, &hi) || hi < lo) {
                snprintf(err, err_size, "cpus '%s': a range is LOW-HIGH with LOW <= HIGH", list);
                return AM2Z_ECONFIG;
            }
        }
        for (unsigned long c = lo; c <= hi; c++)
            CPU_SET(c, &set);
        if (*p == '\0')
            break;
        if (*p != ',') {
            snprintf(err, err_size, "cpus '%s': unexpected '%c' (use e.g. 0 or 0,2-3)", list, *p);
            return AM2Z_ECONFIG;
        }
        p++;
    }
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set) && !CPU_ISSET(c, &allowed)) {
                snprintf(err, err_size, "cpus '%s': CPU %d is not available to this process "
                         "(this machine has %ld online)", list, c, sysconf(_SC_NPROCESSORS_ONLN));
                return AM2Z_ECONFIG;
            }
    }
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        snprintf(err, err_size, "cpus '%s': %s", list,
                 errno == EINVAL ? "none of these CPUs is available to this process"
                                 : strerror(errno));
        return AM2Z_ECONFIG;
    }
    return AM2Z_OK;
}

unsigned
am2z_sys_cpus_allowed(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 0;
    return (unsigned)CPU_COUNT(&set);
}
