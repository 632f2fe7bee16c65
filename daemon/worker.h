/*
 * worker.h - the worker threads (worker.c): each runs the worker part of
 * every module on its own loop; the daemon's thread talks to them only
 * through these calls.
 */
#ifndef MXB_WORKER_H
#define MXB_WORKER_H
#include "../policy/policy.h"
#include "module.h"

int		 workers_start(unsigned n, const struct module *const *mods);
unsigned	 workers_count(void);
void		 workers_reload(struct policy *);	/* not taken over */
void		 workers_shutdown(void);
void		 workers_stop(void);

#endif
