/*
 * fuzz_nfq.c - the NFQUEUE side of nfq/nfq.c on what the kernel (or
 * anything that gets a datagram to the socket) hands it: whole netlink
 * datagrams through nfq_datagram() (libmnl's message walk, the
 * nfnetlink_queue attributes, the packet parser, classification and the
 * verdict), and raw packets through nfq_parse_packet() and the
 * classifier.  nfq.c is included, not linked, to reach its static
 * functions; the archive's nfq.o is then never pulled in.
 *
 * No socket is opened: the verdicts gathered per datagram are dropped
 * (a datagram of at most NFQ_FUZZ_MAX octets cannot fill the verdict
 * buffer, so nfq_flush() never sends).
 * Input: one octet (bit 0: raw packet, else datagram; bit 1: a datagram
 * from a foreign port id; bit 2: truncated), then the bytes.
 */
#include "../../nfq/nfq.c"

#include "fuzz.h"

/* at 32 octets a message, the verdict buffer takes 200 */
#define NFQ_FUZZ_MAX	4096

static struct nfq_queue	fq;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fq.w = nfq_worker_new(0, uv_default_loop());
	fuzz_policy("hostname gw.example.com\n"
	    "listen incoming port 10025\nlisten outgoing port 10026\n"
	    "default incoming proxy\ndefault outgoing proxy\n"
	    "port \"lo\" {\n incoming proxy\n outgoing pass\n}\n"
	    "domain \"example.com\" {\n server 192.0.2.10 port 25\n}\n"
	    "domain \"example.net\" {\n server 2001:db8:2::10\n}\n");
	fq.num = 7;
	fq.portid = 1234;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[NFQ_FUZZ_MAX] NFQ_ALIGNED;
	struct sockaddr_storage src, dst;
	struct sockaddr_nl sa;
	struct mmsghdr m;
	unsigned flags;

	if (size < 1 || size - 1 > sizeof(buf))
		return 0;
	flags = data[0];
	memcpy(buf, data + 1, size - 1);
	if (flags & 1) {
		if (nfq_parse_packet((uint8_t *)buf, size - 1, &src, &dst) == 0)
			nfq_classify(&fq, 1, flags << 8, (struct sockaddr *)&src,
			    (struct sockaddr *)&dst);
	} else {
		memset(&m, 0, sizeof(m));
		memset(&sa, 0, sizeof(sa));
		sa.nl_family = AF_NETLINK;
		sa.nl_pid = flags & 2 ? 4321 : 0;
		m.msg_hdr.msg_name = &sa;
		m.msg_hdr.msg_namelen = sizeof(sa);
		m.msg_hdr.msg_flags = flags & 4 ? MSG_TRUNC : 0;
		m.msg_len = (unsigned)(size - 1);
		nfq_datagram(&fq, buf, &m);
	}
	if (fq.vlen > sizeof(fq.vbuf))
		abort();
	fq.vlen = 0;
	return 0;
}
