/*  am2z_result.c — see am2z_result.h. */
#include "am2z_result.h"

#include <stdlib.h>

am2z_result_t *
am2z_result_new(void)
{
    return calloc(1, sizeof(am2z_result_t));
}

void
am2z_result_destroy(am2z_result_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_result_t *self = *self_p;
    am2z_state_destroy(&self->state);
    am2z_error_destroy(&self->error);
    free(self);
    *self_p = NULL;
}
