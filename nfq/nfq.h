/*
 * nfq.h - the netlink queue that classifies the first packet of each new
 * SMTP flow, and the memory of which bridge port those flows came in on.
 */
#ifndef MXB_NFQ_H
#define MXB_NFQ_H
#include <sys/socket.h>

#include "../daemon/module.h"

/*
 * The packet mark layout, shared with scripts/mxbridge-netfilter.
 */
#define NFQ_MARK_PORT		0x0000ffffu	/* ingress ifindex */
#define NFQ_MARK_CLASS		0x000f0000u	/* one of below */
#define NFQ_MARK_TPROXY		0x00100000u	/* TPROXY delivery */
#define NFQ_MARK_OWN		0x00200000u	/* daemon's sockets */

#define NFQ_CLASS_INCOMING	0x00010000u	/* incoming proxy */
#define NFQ_CLASS_OUTGOING	0x00020000u	/* outgoing proxy */
#define NFQ_CLASS_PASS		0x00030000u	/* routed on */
#define NFQ_CLASS_DROP		0x00040000u	/* dropped */

extern const struct module nfq_module;

/* the ingress port of a recently classified flow, or NULL if unknown */
const char	*nfq_flow_port(const struct sockaddr *src,
		    const struct sockaddr *dst);

#endif
