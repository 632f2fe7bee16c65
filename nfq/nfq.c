/*
 * nfq.c - the NFQUEUE reader.  It owns the netlink socket bound to the
 * policy's queue number, reads the first packet of every new flow that
 * the netfilter rules queue, asks policy_classify() what to do with it
 * and answers NF_REPEAT with the class in the packet mark, so that the
 * rest of the mangle chain (TPROXY, pass, drop) acts on it, and keeps
 * the decision counters.  The listeners learn a proxied flow's ingress
 * port and class from the mark of the accepted socket itself
 * (tcp_fwmark_accept, see mxbridge-netfilter(8)), not from here.
 *
 * Per-worker state is passed explicitly: a struct nfq_worker, made with
 * the loop it runs on, holds that loop's queue (with its receive and
 * verdict buffers), counters and port names; nothing here is shared.
 *
 * If the queue cannot be opened the daemon runs without it: the
 * listeners still work, and the kernel's fail-open or fail-closed rule
 * decides what happens to SMTP flows.
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netfilter/nf_tables.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <uv.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/counter.h"
#include "../common/ifname.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "../daemon/control.h"
#include "../policy/policy.h"
#include "nfq.h"
#include "nfq_local.h"

#define NFQ_COPY_RANGE		256	/* IPv6, ext. headers, TCP */
#define NFQ_QUEUE_MAXLEN	4096	/* packets waiting for a verdict */
#define NFQ_RECVBUF		16384	/* one netlink datagram */
#define NFQ_READ_BATCH		128	/* datagrams read per wakeup */
#define NFQ_MMSG		16	/* datagrams per recvmmsg */
#define NFQ_VERDICT_MAX		128	/* room for one verdict */
#define NFQ_VERDICT_BUF		(NFQ_VERDICT_MAX * 64)
/* netlink messages are read and built in place */
#define NFQ_ALIGNED		__attribute__((aligned(8)))
#define NFQ_ACK_TIMEOUT		2	/* s to wait for the bind ack */

#define NFQ_IP4_HDR		20	/* without options */
#define NFQ_IP6_HDR		40
#define NFQ_TCP_HDR		20	/* without options; ports first */
#define NFQ_IP4_OFFMASK		0x1fff	/* fragment offset */
#define NFQ_IP6_OFFMASK		0xfff8

/* one bound queue; freed in its poll handle's close callback */
struct nfq_queue {
	uv_poll_t		 poll;
	struct nfq_worker	*w;
	struct mnl_socket	*nl;
	unsigned		 portid;
	unsigned		 num;
	/* verdicts not sent yet */
	char			 vbuf[NFQ_VERDICT_BUF] NFQ_ALIGNED;
	size_t			 vlen;
	/* datagrams read in one recvmmsg (and the bind's ack) */
	char			 rbufs[NFQ_MMSG][NFQ_RECVBUF] NFQ_ALIGNED;
};

/* counters shown by "mxbridgectl stats" */
struct nfq_stats {
	counter_t		 decision[2][3];	/* dir x action */
	counter_t		 malformed;
	counter_t		 errors;
	counter_t		 overruns;
};

/* one worker's classifier, used by its thread only */
struct nfq_worker {
	unsigned		 idx;
	uv_loop_t		*loop;
	struct nfq_queue	*q;		/* NULL: none */
	atomic_int		 open;		/* q != NULL, for "stats" */
	struct nfq_stats	 st;		/* this thread moves them,
						   "stats" reads them */
	struct ifname_cache	*ifnames;	/* ingress port names */
	int			 down;		/* never reopen */
};

/*
 * The workers, one slot each: the daemon's thread makes the array at
 * start, worker i fills slot i in its start hook (the daemon waits for
 * it), and nothing changes them after; kept to the end of the process.
 */
static struct nfq_worker	**nfq_ws;
static unsigned			 nfq_nw;
static int			 nfq_stats_registered;	/* at start */

static int	nfq_start(uv_loop_t *, unsigned);
static int	nfq_wstart(unsigned, uv_loop_t *);
static void	nfq_wreload(unsigned);
static void	nfq_wshutdown(unsigned);

const struct module nfq_module = {
	.name = "nfq",
	.start = nfq_start,
	.reload = nfq_kernel_reload,
	.shutdown = nfq_kernel_shutdown,	/* the table goes with new flows */
	.stop = nfq_kernel_shutdown,
	.wstart = nfq_wstart,
	.wreload = nfq_wreload,
	.wshutdown = nfq_wshutdown,
	.wstop = nfq_wshutdown,
};

/* ------------------------------------------------------------ packets */

static void
nfq_sockaddr(struct sockaddr_storage *ss, int family, const uint8_t *ip,
    const uint8_t *port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, ip, 4);
		memcpy(&sin->sin_port, port, 2);
	} else {
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, ip, 16);
		memcpy(&sin6->sin6_port, port, 2);
	}
}

/* nfq_get16 - a 16-bit field in network byte order */
static size_t
nfq_get16(const uint8_t *p)
{
	return (size_t)p[0] << 8 | p[1];
}

/*
 * nfq_parse_ip4 - the offset of the TCP header of a first fragment.  The
 * queue's copy range may have cut the packet, so its total length may
 * exceed len, but the packet may not end before its TCP header does.
 */
static int
nfq_parse_ip4(const uint8_t *p, size_t len, size_t *off)
{
	size_t ihl;

	if (len < NFQ_IP4_HDR)
		return -1;
	ihl = (size_t)(p[0] & 0x0f) * 4;
	if (ihl < NFQ_IP4_HDR || p[9] != IPPROTO_TCP)
		return -1;
	if (ihl + NFQ_TCP_HDR > len || ihl + NFQ_TCP_HDR > nfq_get16(p + 2))
		return -1;
	if ((nfq_get16(p + 6) & NFQ_IP4_OFFMASK) != 0)
		return -1;			/* not the first fragment */
	*off = ihl;
	return 0;
}

/*
 * nfq_skip_ip6 - step over the extension header of type *nxt at *off:
 * its successor's type and offset; -1 if it is not one we can skip or
 * not inside the buffer
 */
static int
nfq_skip_ip6(const uint8_t *p, size_t len, unsigned *nxt, size_t *off)
{
	const uint8_t *h;

	if (*off + 8 > len)
		return -1;
	h = p + *off;
	switch (*nxt) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
		*off += ((size_t)h[1] + 1) * 8;
		break;
	case IPPROTO_FRAGMENT:
		if ((nfq_get16(h + 2) & NFQ_IP6_OFFMASK) != 0)
			return -1;		/* not the first fragment */
		*off += 8;
		break;
	case IPPROTO_AH:
		*off += ((size_t)h[1] + 2) * 4;
		break;
	default:
		return -1;
	}
	*nxt = h[0];
	return 0;
}

/*
 * nfq_parse_ip6 - the offset of the TCP header past the extension headers.
 * Every header takes 8 octets or more, so the walk ends with the buffer.
 * A payload length of 0 is a jumbogram's and is not checked.
 */
static int
nfq_parse_ip6(const uint8_t *p, size_t len, size_t *off)
{
	size_t plen;
	unsigned nxt;

	if (len < NFQ_IP6_HDR)
		return -1;
	nxt = p[6];
	*off = NFQ_IP6_HDR;
	while (nxt != IPPROTO_TCP)
		if (nfq_skip_ip6(p, len, &nxt, off) == -1)
			return -1;
	plen = nfq_get16(p + 4);
	if (*off + NFQ_TCP_HDR > len ||
	    (plen != 0 && *off + NFQ_TCP_HDR > NFQ_IP6_HDR + plen))
		return -1;
	return 0;
}

int
nfq_parse_packet(const uint8_t *pkt, size_t len, struct sockaddr_storage *src,
    struct sockaddr_storage *dst)
{
	size_t off;

	if (len < 1)
		return -1;
	switch (pkt[0] >> 4) {
	case 4:
		if (nfq_parse_ip4(pkt, len, &off) == -1)
			return -1;
		nfq_sockaddr(src, AF_INET, pkt + 12, pkt + off);
		nfq_sockaddr(dst, AF_INET, pkt + 16, pkt + off + 2);
		return 0;
	case 6:
		if (nfq_parse_ip6(pkt, len, &off) == -1)
			return -1;
		nfq_sockaddr(src, AF_INET6, pkt + 8, pkt + off);
		nfq_sockaddr(dst, AF_INET6, pkt + 24, pkt + off + 2);
		return 0;
	}
	return -1;
}

/* ------------------------------------------------------------ verdicts */

/* nfq_flush - send the verdicts gathered so far in one datagram */
static void
nfq_flush(struct nfq_queue *q)
{
	if (q->vlen == 0)
		return;
	if (mnl_socket_sendto(q->nl, q->vbuf, q->vlen) == -1) {
		counter_inc(&q->w->st.errors);
		log_warn("nfq: sending verdicts queue=%u", q->num);
	}
	q->vlen = 0;
}

/* nfq_verdict - queue one verdict, with a new mark unless mark is NULL */
static void
nfq_verdict(struct nfq_queue *q, uint32_t id, int verdict,
    const uint32_t *mark)
{
	struct nlmsghdr *nlh;

	if (q->vlen + NFQ_VERDICT_MAX > sizeof(q->vbuf))
		nfq_flush(q);
	nlh = nfq_nlmsg_put(q->vbuf + q->vlen, NFQNL_MSG_VERDICT, q->num);
	nfq_nlmsg_verdict_put(nlh, (int)id, verdict);
	if (mark != NULL)
		nfq_nlmsg_verdict_put_mark(nlh, *mark);
	q->vlen += nlh->nlmsg_len;
}

/* nfq_class_mark - the mark bits of a classification */
static uint32_t
nfq_class_mark(const struct policy_class *cls)
{
	switch (cls->action) {
	case POLICY_PROXY:
		return cls->dir == POLICY_DIR_IN ? MARK_CLASS_INCOMING :
		    MARK_CLASS_OUTGOING;
	case POLICY_PASS:
		return MARK_CLASS_PASS;
	case POLICY_DROP:
		return MARK_CLASS_DROP;
	}
	return MARK_CLASS_PASS;
}

uint32_t
nfq_verdict_mark(uint32_t mark, const struct policy_class *cls)
{
	return (mark & ~MARK_CLASS) | nfq_class_mark(cls);
}

static void
nfq_log_decision(const struct sockaddr *src, const struct sockaddr *dst,
    const char *port, const struct policy_class *cls, uint32_t mark)
{
	char s[ADDR_STRLEN], d[ADDR_STRLEN];

	if (log_getverbose() < 1)
		return;
	log_debug("nfq: src=%s dst=%s port=%s dir=%s action=%s reason=%s "
	    "mark=0x%x", addr_fmt(src, s, sizeof(s)),
	    addr_fmt(dst, d, sizeof(d)), port[0] ? port : "-",
	    policy_dir_name(cls->dir), policy_action_name(cls->action),
	    cls->reason != NULL ? cls->reason : "-", mark);
}

/* nfq_classify - decide one new flow and queue its verdict */
static void
nfq_classify(struct nfq_queue *q, uint32_t id, uint32_t mark,
    const struct sockaddr *src, const struct sockaddr *dst)
{
	struct policy_class cls;
	const char *port = ifname_lookup(q->w->ifnames, mark_port(mark),
	    uv_now(q->w->loop));

	memset(&cls, 0, sizeof(cls));
	if ((addr_is_self(dst) ?
	    policy_classify_to_box(policy_current(), port, &cls) :
	    policy_classify(policy_current(), src, dst, port, &cls)) == -1) {
		counter_inc(&q->w->st.errors);
		cls.action = POLICY_PASS;
		cls.reason = "classify-error";
	} else if ((unsigned)cls.dir <= POLICY_DIR_OUT &&
	    (unsigned)cls.action <= POLICY_DROP)
		counter_inc(&q->w->st.decision[cls.dir][cls.action]);
	mark = nfq_verdict_mark(mark, &cls);
	nfq_log_decision(src, dst, port, &cls, mark);
	nfq_verdict(q, id, NF_REPEAT, &mark);
}

/*
 * nfq_malformed - answer a queued packet we cannot read.  The rules queue
 * only TCP SYNs to the SMTP ports, so this is one whose headers run past
 * the copy range (long IPv6 extension headers) or worse.  Accepted
 * without a class, its whole flow would be routed past the policy and the
 * proxy; it gets the drop class instead (the rules answer with a reset).
 */
static void
nfq_malformed(struct nfq_queue *q, uint32_t id, uint32_t mark)
{
	struct policy_class cls;

	memset(&cls, 0, sizeof(cls));
	cls.action = POLICY_DROP;
	mark = nfq_verdict_mark(mark, &cls);
	counter_inc(&q->w->st.malformed);
	log_debug("nfq: malformed packet id=%u action=drop mark=0x%x", id,
	    mark);
	nfq_verdict(q, id, NF_REPEAT, &mark);
}

/* nfq_packet_cb - one queued packet: parse, classify, answer */
static int
nfq_packet_cb(const struct nlmsghdr *nlh, void *arg)
{
	struct nfq_queue *q = arg;
	struct nlattr *attr[NFQA_MAX + 1];
	const struct nfqnl_msg_packet_hdr *ph;
	struct sockaddr_storage src, dst;
	uint32_t id, mark = 0;

	if (NFNL_MSG_TYPE(nlh->nlmsg_type) != NFQNL_MSG_PACKET)
		return MNL_CB_OK;
	memset(attr, 0, sizeof(attr));
	if (nfq_nlmsg_parse(nlh, attr) < 0 || attr[NFQA_PACKET_HDR] == NULL ||
	    mnl_attr_get_payload_len(attr[NFQA_PACKET_HDR]) < sizeof(*ph)) {
		counter_inc(&q->w->st.errors);
		log_warnx("nfq: unparsable queue message queue=%u", q->num);
		return MNL_CB_OK;
	}
	ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
	id = ntohl(ph->packet_id);
	if (attr[NFQA_MARK] != NULL)
		mark = ntohl(mnl_attr_get_u32(attr[NFQA_MARK]));
	if (attr[NFQA_PAYLOAD] == NULL ||
	    nfq_parse_packet(mnl_attr_get_payload(attr[NFQA_PAYLOAD]),
	    mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]), &src, &dst) == -1) {
		nfq_malformed(q, id, mark);
		return MNL_CB_OK;
	}
	nfq_classify(q, id, mark, (struct sockaddr *)&src,
	    (struct sockaddr *)&dst);
	return MNL_CB_OK;
}

/*
 * nfq_datagram_valid - every message of a netlink datagram lies inside
 * it.  libmnl's walk compares a message's length with what is left as an
 * int: a length of 2 GiB or more passes as negative, the callback reads
 * past the datagram and the next message is looked for gigabytes away.
 */
int
nfq_datagram_valid(const void *buf, size_t len)
{
	const struct nlmsghdr *nlh;
	size_t off = 0;

	while (len - off >= sizeof(*nlh)) {
		nlh = (const struct nlmsghdr *)((const char *)buf + off);
		if (nlh->nlmsg_len < sizeof(*nlh) || nlh->nlmsg_len > len - off)
			return 0;
		if ((off += MNL_ALIGN(nlh->nlmsg_len)) >= len)
			break;
	}
	return 1;
}

/* nfq_datagram - one received netlink datagram: its packets */
static void
nfq_datagram(struct nfq_queue *q, const char *buf, const struct mmsghdr *m)
{
	const struct sockaddr_nl *sa = m->msg_hdr.msg_name;

	/* only the kernel talks to us; a cut datagram cannot be parsed */
	if ((m->msg_hdr.msg_flags & MSG_TRUNC) || sa->nl_pid != 0) {
		counter_inc(&q->w->st.errors);
		log_warnx("nfq: %s datagram queue=%u",
		    sa->nl_pid != 0 ? "foreign" : "truncated", q->num);
		return;
	}
	if (!nfq_datagram_valid(buf, m->msg_len)) {
		counter_inc(&q->w->st.errors);
		log_warnx("nfq: malformed datagram queue=%u", q->num);
		return;
	}
	if (mnl_cb_run(buf, m->msg_len, 0, q->portid, nfq_packet_cb,
	    q) == -1) {
		counter_inc(&q->w->st.errors);
		log_warn("nfq: netlink error queue=%u", q->num);
	}
}

/*
 * nfq_recv - up to NFQ_MMSG datagrams in one call; 0 when the socket is
 * empty, -1 on an error that ends this wakeup
 */
static int
nfq_recv(struct nfq_queue *q)
{
	struct mmsghdr mm[NFQ_MMSG];
	struct iovec iov[NFQ_MMSG];
	struct sockaddr_nl sa[NFQ_MMSG];
	int i, n;

	memset(mm, 0, sizeof(mm));
	for (i = 0; i < NFQ_MMSG; i++) {
		iov[i].iov_base = q->rbufs[i];
		iov[i].iov_len = sizeof(q->rbufs[i]);
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		mm[i].msg_hdr.msg_name = &sa[i];
		mm[i].msg_hdr.msg_namelen = sizeof(sa[i]);
	}
	if ((n = recvmmsg(mnl_socket_get_fd(q->nl), mm, NFQ_MMSG,
	    MSG_DONTWAIT, NULL)) == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno == ENOBUFS) {
			/* the kernel failed open (or closed) on a packet */
			counter_inc(&q->w->st.overruns);
			return NFQ_MMSG;
		}
		if (errno == EINTR)
			return NFQ_MMSG;
		counter_inc(&q->w->st.errors);
		log_warn("nfq: receive queue=%u", q->num);
		return -1;
	}
	for (i = 0; i < n; i++)
		nfq_datagram(q, q->rbufs[i], &mm[i]);
	return n;
}

/*
 * nfq_read_cb - drain a batch of queued packets without blocking.  A
 * short recvmmsg means the socket is empty: no second call just to see
 * EAGAIN.  An overrun the kernel flagged while we were busy shows as
 * POLLERR, on which libuv stops the handle: clear it and go on, or the
 * classifier would stop for good.
 */
static void
nfq_read_cb(uv_poll_t *h, int status, int events)
{
	struct nfq_queue *q = h->data;
	int i, err = 0;
	socklen_t len = sizeof(err);

	if (status < 0) {
		if (getsockopt(mnl_socket_get_fd(q->nl), SOL_SOCKET, SO_ERROR,
		    &err, &len) == -1) {
			counter_inc(&q->w->st.errors);
			log_warn("nfq: queue=%u stopped", q->num);
			return;
		}
		if (err == ENOBUFS)
			counter_inc(&q->w->st.overruns);
		else if (err != 0) {
			counter_inc(&q->w->st.errors);
			log_warnx("nfq: poll queue=%u: %s", q->num,
			    strerror(err));
		}
		uv_poll_start(h, UV_READABLE, nfq_read_cb);
	}
	for (i = 0; i < NFQ_READ_BATCH / NFQ_MMSG; i++)
		if (nfq_recv(q) < NFQ_MMSG)
			break;
	nfq_flush(q);
}

/* ------------------------------------------------------------ the queue */

/* nfq_configure - bind the queue and set its mode; wait for the ack */
static int
nfq_configure(struct nfq_queue *q)
{
	char *buf = q->rbufs[0];
	struct timeval tv = { NFQ_ACK_TIMEOUT, 0 };
	struct nlmsghdr *nlh;
	uint32_t flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
	unsigned seq = (unsigned)time(NULL);
	ssize_t n;
	int rc;

	nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->num);
	nlh->nlmsg_flags |= NLM_F_ACK;
	nlh->nlmsg_seq = seq;
	nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_BIND);
	nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, NFQ_COPY_RANGE);
	nfq_nlmsg_cfg_put_qmaxlen(nlh, NFQ_QUEUE_MAXLEN);
	mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
	mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(flags));
	if (setsockopt(mnl_socket_get_fd(q->nl), SOL_SOCKET, SO_RCVTIMEO,
	    &tv, sizeof(tv)) == -1 ||
	    mnl_socket_sendto(q->nl, nlh, nlh->nlmsg_len) == -1)
		return -1;
	do {
		if ((n = mnl_socket_recvfrom(q->nl, buf,
		    sizeof(q->rbufs[0]))) == -1)
			return -1;
		/* packets may already arrive before the ack */
		rc = mnl_cb_run(buf, (size_t)n, seq, q->portid, nfq_packet_cb,
		    q);
		nfq_flush(q);
	} while (rc > 0);
	return rc;
}

/*
 * nfq_rcvbuf - the socket's receive buffer (queue-buffer): packets that
 * find it full are lost to the classifier (counted as overruns)
 */
static void
nfq_rcvbuf(struct nfq_queue *q)
{
	uint64_t want = policy_current()->queue_buffer;
	int fd = mnl_socket_get_fd(q->nl), bufsz;

	bufsz = want > INT_MAX / 2 ? INT_MAX / 2 : (int)want;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufsz,
	    sizeof(bufsz)) == -1)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz,
		    sizeof(bufsz));
}

/* nfq_queue_open - a netlink socket bound to queue num, watched by w's
 * loop */
static struct nfq_queue *
nfq_queue_open(struct nfq_worker *w, unsigned num)
{
	struct nfq_queue *q;
	int fd;

	q = xcalloc(1, sizeof(*q));
	q->w = w;
	q->num = num;
	if ((q->nl = mnl_socket_open(NETLINK_NETFILTER)) == NULL) {
		log_warn("nfq: netlink socket");
		goto fail;
	}
	if (mnl_socket_bind(q->nl, 0, MNL_SOCKET_AUTOPID) == -1) {
		log_warn("nfq: netlink bind");
		goto fail;
	}
	q->portid = mnl_socket_get_portid(q->nl);
	fd = mnl_socket_get_fd(q->nl);
	nfq_rcvbuf(q);
	if (nfq_configure(q) == -1) {
		log_warn("nfq: binding queue=%u", num);
		goto fail;
	}
	if (uv_poll_init(w->loop, &q->poll, fd) != 0) {
		log_warnx("nfq: poll init queue=%u", num);
		goto fail;
	}
	q->poll.data = q;
	uv_poll_start(&q->poll, UV_READABLE, nfq_read_cb);
	return q;
fail:
	if (q->nl != NULL)
		mnl_socket_close(q->nl);
	free(q);
	return NULL;
}

static void
nfq_queue_close_cb(uv_handle_t *h)
{
	struct nfq_queue *q = h->data;

	mnl_socket_close(q->nl);	/* the kernel unbinds the queue */
	free(q);
}

/* nfq_queue_close - unbind the queue: the kernel's bypass rule takes over */
static void
nfq_queue_close(struct nfq_worker *w)
{
	struct nfq_queue *q = w->q;

	if (q == NULL)
		return;
	w->q = NULL;
	atomic_store(&w->open, 0);
	nfq_flush(q);
	uv_close((uv_handle_t *)&q->poll, nfq_queue_close_cb);
	log_info("nfq: queue=%u closed", q->num);
}

/* nfq_stats - the "stats" lines of this module: every worker's summed,
 * then each worker's decisions */
static void
nfq_stats(struct buf *out)
{
	static const char *dirs[] = { "incoming", "outgoing" };
	static const char *acts[] = { "proxy", "pass", "drop" };
	uint64_t dec[2][3] = { { 0 } }, kdec[2][3] = { { 0 } }, kn = 0, bridged = 0;
	uint64_t mal = 0, err = 0, ovr = 0, n;
	unsigned i;
	int d, a, open = 0, nopen = 0, kernel;

	for (i = 0; i < nfq_nw; i++) {
		const struct nfq_worker *w = nfq_ws[i];

		if (w == NULL)
			continue;
		if (atomic_load_explicit(&w->open, memory_order_relaxed)) {
			open = 1;
			nopen++;
		}
		for (d = 0; d < 2; d++)
			for (a = 0; a < 3; a++)
				dec[d][a] += counter_get(&w->st.decision[d][a]);
		mal += counter_get(&w->st.malformed);
		err += counter_get(&w->st.errors);
		ovr += counter_get(&w->st.overruns);
	}
	/* the decisions: the queue's and the kernel table's together */
	kernel = nfq_kernel_counts(kdec, &bridged);
	for (d = 0; d < 2; d++)
		for (a = 0; a < 3; a++) {
			dec[d][a] += kdec[d][a];
			kn += kdec[d][a];
		}
	buf_printf(out, "nfq_queue_open=%d\n", open);
	buf_printf(out, "nfq_queues_open=%d\n", nopen);
	buf_printf(out, "nfq_kernel=%d\n", kernel);
	buf_printf(out, "nfq_kernel_decisions=%llu\n", (unsigned long long)kn);
	buf_printf(out, "nfq_kernel_bridged=%llu\n",
	    (unsigned long long)bridged);
	for (d = 0; d < 2; d++)
		for (a = 0; a < 3; a++)
			buf_printf(out, "nfq_%s_%s=%llu\n", dirs[d], acts[a],
			    (unsigned long long)dec[d][a]);
	buf_printf(out, "nfq_malformed=%llu\n", (unsigned long long)mal);
	buf_printf(out, "nfq_errors=%llu\n", (unsigned long long)err);
	buf_printf(out, "nfq_overruns=%llu\n", (unsigned long long)ovr);
	for (i = 0; i < nfq_nw; i++) {
		const struct nfq_worker *w = nfq_ws[i];

		if (w == NULL)
			continue;
		for (n = 0, d = 0; d < 2; d++)
			for (a = 0; a < 3; a++)
				n += counter_get(&w->st.decision[d][a]);
		buf_printf(out, "worker.%u.nfq_decisions=%llu\n", i,
		    (unsigned long long)n);
	}
}

/*
 * The divert record: mxbridge-netfilter(8) keeps "... q=Q w=N" in the
 * comment of nft table "bridge mxbridge" (nft stores a comment as user
 * data: type 0 = comment, one length byte, the string with its NUL).
 */
#define NFQ_DIVERT_TABLE	"mxbridge"
#define NFQ_UDATA_COMMENT	0

struct nfq_record {
	char		 text[256];
	int		 found;
};

/* nfq_record_comment - the comment in nft user data ud/len into out */
int
nfq_record_comment(const uint8_t *ud, size_t len, char *out, size_t outlen)
{
	size_t off, n;

	if (outlen == 0)
		return -1;
	for (off = 0; off + 2 <= len; off += 2 + (size_t)ud[off + 1]) {
		n = ud[off + 1];
		if (off + 2 + n > len)
			break;		/* truncated entry: stop */
		if (ud[off] != NFQ_UDATA_COMMENT || n == 0)
			continue;
		if (n >= outlen)
			n = outlen - 1;
		memcpy(out, ud + off + 2, n);
		out[n] = '\0';		/* nft stores the NUL; be sure */
		return 0;
	}
	return -1;
}

/* nfq_record_workers - the w= of a record; 1 where it has none (older) */
unsigned
nfq_record_workers(const char *rec)
{
	const char *w;
	char *end;
	unsigned long v;

	if ((w = nfq_record_value(rec, "w")) == NULL)
		return 1;
	v = strtoul(w, &end, 10);
	if (end == w || (*end != '\0' && *end != ' ') || v == 0 ||
	    v > POLICY_MAXWORKERS)
		return 0;	/* unreadable: agrees with nothing */
	return (unsigned)v;
}

const char *
nfq_record_value(const char *rec, const char *key)
{
	size_t klen = strlen(key);
	const char *w;

	for (w = rec; (w = strstr(w, key)) != NULL; w += klen)
		if ((w == rec || w[-1] == ' ') && w[klen] == '=')
			return w + klen + 1;
	return NULL;
}

/* nfq_record_cb - the comment of the table in one NEWTABLE answer */
static int
nfq_record_cb(const struct nlmsghdr *nlh, void *arg)
{
	struct nfq_record *rec = arg;
	struct nlattr *a;	/* not const: mnl_attr_for_each casts it to char * */

	mnl_attr_for_each(a, nlh, sizeof(struct nfgenmsg))
		if (mnl_attr_get_type(a) == NFTA_TABLE_USERDATA)
			nfq_record_comment(mnl_attr_get_payload(a),
			    mnl_attr_get_payload_len(a), rec->text,
			    sizeof(rec->text));
	rec->found = 1;
	return MNL_CB_OK;
}

int
nfq_nft_query(uint16_t msg, uint16_t flags, uint8_t family,
    void (*req)(struct nlmsghdr *), mnl_cb_t cb, void *arg)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct mnl_socket *nl;
	struct nlmsghdr *nlh;
	struct nfgenmsg *nfg;
	unsigned portid, seq = (unsigned)time(NULL);
	ssize_t n;
	int rc = -1, r = MNL_CB_OK;

	if ((nl = mnl_socket_open(NETLINK_NETFILTER)) == NULL)
		return -1;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) == -1)
		goto done;
	portid = mnl_socket_get_portid(nl);
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | msg;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	nlh->nlmsg_seq = seq;
	nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
	nfg->nfgen_family = family;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = 0;
	req(nlh);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) == -1)
		goto done;
	while (r > MNL_CB_STOP) {
		if ((n = mnl_socket_recvfrom(nl, buf, sizeof(buf))) <= 0)
			goto done;
		if (!nfq_datagram_valid(buf, (size_t)n))
			goto done;
		r = mnl_cb_run(buf, (size_t)n, seq, portid, cb, arg);
	}
	if (r == MNL_CB_ERROR)
		goto done;
	rc = 0;
done:
	mnl_socket_close(nl);
	return rc;
}

/* nfq_record_req - GETTABLE of the script's bridge table */
static void
nfq_record_req(struct nlmsghdr *nlh)
{
	mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, NFQ_DIVERT_TABLE);
}

/*
 * nfq_record_read - the divert record of this network namespace: 1 with
 * its text, 0 when the script is not up (no table), -1 on error.  At
 * start, and every few seconds from the kernel classifier's timer.
 */
static int
nfq_record_read(struct nfq_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	if (nfq_nft_query(NFT_MSG_GETTABLE, 0, NFPROTO_BRIDGE, nfq_record_req,
	    nfq_record_cb, rec) == -1)
		return errno == ENOENT ? 0 : -1;
	return rec->found;
}

int
nfq_record_read_text(char *text, size_t len)
{
	struct nfq_record rec;
	int rc;

	if ((rc = nfq_record_read(&rec)) == 1)
		snprintf(text, len, "%s", rec.text);
	return rc;
}

/*
 * nfq_check_divert - the script must spread flows over exactly the queues
 * this daemon's workers read: a mismatch would leave a share of new flows
 * on a queue nobody reads (passed or refused unclassified), so it stops
 * the start. No table: nothing is diverted, nothing to agree on.
 */
static int
nfq_check_divert(const struct policy *pol)
{
	struct nfq_record rec;
	unsigned want = policy_workers(pol), have;

	switch (nfq_record_read(&rec)) {
	case -1:
		log_warn("nfq: reading the divert record (nft table bridge %s)",
		    NFQ_DIVERT_TABLE);
		return 0;
	case 0:
		return 0;
	}
	if ((have = nfq_record_workers(rec.text)) == want)
		return 0;
	if (have == 0) {
		log_warnx("nfq: unreadable workers in the divert record \"%s\": "
		    "refusing to start; run mxbridge-netfilter up -W %u",
		    rec.text, want);
		return -1;
	}
	log_warnx("nfq: mxbridge-netfilter spreads flows over %u queue%s "
	    "(-W %u) but workers is %u: refusing to start; run "
	    "mxbridge-netfilter up -W %u or set \"workers %u\"", have,
	    have == 1 ? "" : "s", have, want, want, have);
	return -1;
}

/* nfq_attach - open worker w's queue, or say why it runs without */
static void
nfq_attach(struct nfq_worker *w, unsigned num)
{
	if ((w->q = nfq_queue_open(w, num)) == NULL) {
		log_warnx("nfq: queue=%u not available, running without "
		    "classification worker=%u", num, w->idx);
		return;
	}
	atomic_store(&w->open, 1);
	log_info("nfq: queue=%u open copy_range=%d maxlen=%d worker=%u", num,
	    NFQ_COPY_RANGE, NFQ_QUEUE_MAXLEN, w->idx);
}

/* nfq_worker_new - worker idx on loop, without its queue yet */
static struct nfq_worker *
nfq_worker_new(unsigned idx, uv_loop_t *loop)
{
	struct nfq_worker *w = xcalloc(1, sizeof(*w));

	w->idx = idx;
	w->loop = loop;
	w->ifnames = ifname_cache_new();
	return w;
}

/* nfq_start - the shared part: the script and this daemon agree on the
 * queues, the workers' slots */
static int
nfq_start(uv_loop_t *loop, unsigned nworkers)
{
	if (nfq_ws == NULL) {
		nfq_ws = xcalloc(nworkers, sizeof(*nfq_ws));
		nfq_nw = nworkers;
	}
	if (!nfq_stats_registered) {
		control_register_stats(nfq_stats);
		nfq_stats_registered = 1;
	}
	if (nfq_check_divert(policy_current()) == -1)
		return -1;
	return nfq_kernel_start(loop);
}

/* nfq_wstart - worker idx reads queue queue-number + idx */
static int
nfq_wstart(unsigned idx, uv_loop_t *loop)
{
	if (idx >= nfq_nw)
		return -1;
	if (nfq_ws[idx] == NULL)
		nfq_ws[idx] = nfq_worker_new(idx, loop);
	nfq_attach(nfq_ws[idx], policy_current()->queue_num + idx);
	return 0;
}

/* nfq_wreload - follow a changed queue number; keep the queue otherwise */
static void
nfq_wreload(unsigned idx)
{
	struct nfq_worker *w = nfq_ws[idx];
	unsigned num = policy_current()->queue_num + idx;

	if (w == NULL || w->down)
		return;
	if (w->q != NULL && w->q->num == num) {
		nfq_rcvbuf(w->q);
		return;
	}
	if (w->q != NULL)
		log_info("nfq: queue number changed from=%u to=%u worker=%u",
		    w->q->num, num, idx);
	nfq_queue_close(w);
	nfq_attach(w, num);
}

/* nfq_wshutdown - stop classifying: new flows meet the kernel's bypass */
static void
nfq_wshutdown(unsigned idx)
{
	struct nfq_worker *w = nfq_ws[idx];

	if (w == NULL)
		return;
	w->down = 1;
	nfq_queue_close(w);
}
