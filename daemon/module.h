/*
 * module.h - what the daemon asks of each module (nfq, proxy, mta).
 * Each module exports one const struct module; daemon/mxbridge.c lists
 * them in start order.  Every hook reads policy_current() itself.
 */
#ifndef MXB_MODULE_H
#define MXB_MODULE_H
#include <uv.h>

struct module {
	const char	*name;
	int		(*start)(uv_loop_t *);	/* 0 or -1 (logged) */
	void		(*reload)(void);	/* a new snapshot is current */
	void		(*shutdown)(void);	/* stop accepting new work */
	unsigned	(*busy)(void);		/* sessions still running */
	void		(*stop)(void);		/* close every handle now */
};

#endif
