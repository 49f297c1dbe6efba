/*  am2z_lib.c — the shared library libam2z is made of the static libraries
    am2z_client, am2z_worker, am2z_broker and am2z_common linked whole; CMake
    needs one source of its own to build it. */
#include "am2z_error.h"

/*  The library's version, for programs that load it dynamically. */
const char *am2z_version(void);
const char *
am2z_version(void)
{
    return "0.1.0";
}
