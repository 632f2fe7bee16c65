/*
 * clients.h - the proxy's per-client table (clients.c): open sessions
 * and connection-rate bucket of each client group (an address masked to
 * a prefix), bounded by evicting the least recently used idle entry.
 */
#ifndef MXB_PROXY_CLIENTS_H
#define MXB_PROXY_CLIENTS_H
#include <sys/socket.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/addr.h"
#include "../policy/policy.h"

#define PROXY_CLIENTS_FMTLEN	(INET6_ADDRSTRLEN + 5)	/* "addr/len" */

struct proxy_clients;
struct proxy_client;

struct proxy_clients *proxy_clients_new(size_t max);	/* size, soft */
void		 proxy_clients_free(struct proxy_clients *);
int		 proxy_clients_key(const struct sockaddr *, unsigned plen4,
		    unsigned plen6, struct addr_net *);
struct proxy_client *proxy_clients_get(struct proxy_clients *,
		    const struct sockaddr *, unsigned plen4, unsigned plen6,
		    uint64_t now_ms);
void		 proxy_clients_hold(struct proxy_clients *,
		    struct proxy_client *, uint64_t now_ms);
void		 proxy_clients_release(struct proxy_clients *,
		    struct proxy_client *, uint64_t now_ms);
size_t		 proxy_clients_sweep(struct proxy_clients *, uint64_t now_ms,
		    uint64_t idle_ms);
unsigned	 proxy_clients_open(const struct proxy_client *);
struct policy_rate *proxy_clients_rate(struct proxy_client *);
size_t		 proxy_clients_count(const struct proxy_clients *);
uint64_t	 proxy_clients_evicted(const struct proxy_clients *);
unsigned	 proxy_clients_cap_auto(uint64_t nofile);	/* sessions auto */
const char	*proxy_clients_fmt(const struct proxy_client *, char *,
		    size_t);

#endif
