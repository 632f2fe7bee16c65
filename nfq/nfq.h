/*
 * nfq.h - the netlink queue that classifies the first packet of each new
 * SMTP flow.
 */
#ifndef MXB_NFQ_H
#define MXB_NFQ_H
#include <sys/socket.h>
#include <stddef.h>
#include <stdint.h>

#include <net/if.h>

#include "../common/mark.h"
#include "../daemon/module.h"

struct buf;
struct policy;
struct policy_class;

extern const struct module nfq_module;

/*
 * The pure parts of the classifier, public for the unit tests.  The names
 * stay clear of libnetfilter_queue's own nfq_* symbols.
 */

/*
 * the TCP endpoints of a queued IPv4 or IPv6 packet (pkt, len as the queue
 * copied it) into src and dst; -1 if it is not the first fragment of a TCP
 * packet whose headers lie inside both the buffer and the packet's length
 */
int		 nfq_parse_packet(const uint8_t *pkt, size_t len,
		    struct sockaddr_storage *src, struct sockaddr_storage *dst);

/*
 * 1 if every netlink message of the datagram buf/len lies inside it (each
 * one's length at least a header and at most what is left), else 0
 */
int		 nfq_datagram_valid(const void *buf, size_t len);

/* the verdict mark: mark with its class bits replaced by the class's */
uint32_t	 nfq_verdict_mark(uint32_t mark, const struct policy_class *);

/*
 * The divert record of mxbridge-netfilter(8) (the comment of nft table
 * "bridge mxbridge"): the comment in the table's user data ud/len into
 * out (0, or -1 if there is none), and the record's w= (the queues the
 * script spreads over): 1 when absent, 0 when unreadable.
 */
int		 nfq_record_comment(const uint8_t *ud, size_t len, char *out,
		    size_t outlen);
unsigned	 nfq_record_workers(const char *rec);

/*
 * The in-kernel classifier (kernel.c).  From the record, the bridge (br=)
 * and the SMTP ports (s=, comma separated) the script diverts: 0, or -1
 * if either is absent or not a plain interface name and port list; and
 * the fast path's idle timeout (t=, seconds; 0 when absent or off: the
 * script keeps no flow on the bridge).  The bridge's MAC address and its
 * ports (nft text: "p0", "p1") are not in the record: kernel.c reads
 * them from the kernel (empty: unknown).
 */
struct nfq_divert {
	char		 bridge[IF_NAMESIZE];
	char		 smtp[96];
	unsigned	 fastto;
	char		 mac[18];
	char		 ports[512];
};
int		 nfq_record_divert(const char *rec, struct nfq_divert *);

/*
 * the nft commands (one transaction) that make the kernel classify new
 * flows as policy_classify() and policy_classify_to_box() would, for the
 * divert d, a bridge port's ifindex given by ifindex(name) (0: absent)
 */
void		 nfq_kernel_ruleset(const struct policy *,
		    const struct nfq_divert *, unsigned (*ifindex)(const char *),
		    struct buf *out);

#endif
