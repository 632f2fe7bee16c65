/*
 * priv.h - the daemon's rights (daemon/priv.c): the change from root to
 * the configured user with the capabilities it keeps, and the sandbox.
 */
#ifndef MXB_PRIV_H
#define MXB_PRIV_H
#include <sys/types.h>

struct policy;

/* the configured user's ids; 0, or -1 with err (no such user, or root) */
int	priv_lookup(const struct policy *, uid_t *, gid_t *, char *, size_t);
/* become that user, keeping only what the daemon needs; before any
 * thread exists.  0, or -1 with err */
int	priv_drop(const struct policy *, char *, size_t);
/* no new privileges and the system-call allowlist, for this thread and
 * the threads it makes; 0, or -1 with err */
int	priv_sandbox(char *, size_t);
/* a reload from old to new needs nothing the daemon gave up; 0, or -1
 * with err */
int	priv_reload_check(const struct policy *, const struct policy *,
	    char *, size_t);

#endif
