/*
 * mark.h - the one definition of the 32-bit packet and socket mark: a
 * contract between scripts/mxbridge-netfilter (M_* there; its man page
 * has the table), nfq/ (the verdict mark of a new flow) and proxy/ (the
 * mark of an accepted connection, and the mark of the daemon's own
 * upstream sockets).  test_nfq checks the script's values against these.
 */
#ifndef MXB_MARK_H
#define MXB_MARK_H
#include <stdint.h>

#define MARK_PORT		0x0000ffffu	/* ingress ifindex (bridge divert) */
#define MARK_CLASS		0x000f0000u	/* one of MARK_CLASS_* */
#define MARK_TPROXY		0x00100000u	/* deliver locally (TPROXY) */
#define MARK_OWN		0x00200000u	/* the daemon's own sockets */
#define MARK_BRIDGED		0x00400000u	/* a passed flow: stays bridged */

#define MARK_CLASS_INCOMING	0x00010000u	/* incoming proxy */
#define MARK_CLASS_OUTGOING	0x00020000u	/* outgoing proxy */
#define MARK_CLASS_PASS		0x00030000u	/* routed on */
#define MARK_CLASS_DROP		0x00040000u	/* dropped */

/* the ingress bridge port's ifindex in a mark; 0: none */
static inline unsigned
mark_port(uint32_t mark)
{
	return mark & MARK_PORT;
}

#endif
