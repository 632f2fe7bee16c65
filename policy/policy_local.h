/*
 * policy_local.h - what the policy module's own files share and nobody
 * else should call: creating a snapshot with its defaults, freeing it, and
 * the domain-name syntax check that both the parser and decide.c apply.
 */
#ifndef MXB_POLICY_LOCAL_H
#define MXB_POLICY_LOCAL_H

#include "policy.h"

struct policy	*policy_new(const char *path);
void		 policy_free(struct policy *);
int		 policy_valid_domain(const char *);

#endif
