/*
 * module.h - what the daemon asks of each module (nfq, proxy, mta).
 * Each module exports one const struct module; daemon/mxbridge.c lists
 * them in start order.  Every hook reads policy_current() itself.
 *
 * A module has a process part, called on the daemon's thread with its
 * loop (the MTA lives there, and the shared tables of the others), and
 * may have a worker part, called on each worker's thread with that
 * worker's loop and index (daemon/worker.c): its listeners, queue and
 * sessions.  The worker hooks of worker w only ever run on w's thread.
 */
#ifndef MXB_MODULE_H
#define MXB_MODULE_H
#include <uv.h>

struct module {
	const char	*name;
	/* the process part, on the daemon's thread */
	int		(*start)(uv_loop_t *, unsigned nworkers); /* 0, -1 logged */
	void		(*reload)(void);	/* a new snapshot is current */
	void		(*shutdown)(void);	/* stop accepting new work */
	unsigned	(*busy)(void);		/* sessions still running, in
						   every worker */
	void		(*stop)(void);		/* close every handle now; the
						   workers have ended */
	/* the worker part, on worker w's thread */
	int		(*wstart)(unsigned w, uv_loop_t *);	/* 0, -1 logged */
	void		(*wreload)(unsigned w);
	void		(*wshutdown)(unsigned w);
	void		(*wstop)(unsigned w);
};

#endif
