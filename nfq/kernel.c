/*
 * kernel.c - the in-kernel classifier.  It owns the nft table "inet
 * mxbridge_classify" that puts policy_classify()'s decision for a new
 * SMTP flow into the packet mark in the kernel itself, before
 * mxbridge-netfilter(8)'s queue rule, so that the SYN never makes the
 * NFQUEUE round trip through the daemon (issue 17: the round trip cost
 * a third of the connection setup rate, and its reinjection ran in the
 * daemon's context).  The queue stays behind it for what the table does
 * not decide (until the table is loaded, after "classifier queue", a
 * packet the rules cannot read).
 *
 * The table is made with the nft "owner" flag through libnftables (the
 * nft tool's own library: the table's text is the ruleset language an
 * admin reads in "nft list ruleset", and the kernel checks it): only
 * this process's netlink socket may change it, and the kernel deletes it
 * when that socket closes, kill -9 included.  So a dead daemon classifies
 * nothing: new flows meet the queue's bypass and the script's fail-open
 * or fail-closed rule exactly as before.
 *
 * What it publishes: the protected domains' servers (sets srv4/srv6),
 * the bypass networks (bypc4/6, byps4/6), each configured bridge port's
 * class per direction (maps pin/pout/tobox, keyed by the port's ifindex
 * in the mark as mxbridge-netfilter sets it), the defaults, and one
 * named counter per direction and action ("stats").  The bridge and the
 * SMTP ports come from the divert record (the script's "br=" and "s=");
 * a port the record lacks (nft cuts a comment at 128 characters) is
 * diverted all the same and classified by the queue behind the table.
 *
 * All of it belongs to the daemon's thread: the context, the timer that
 * follows the divert record and the ports' ifindexes (every 2 s), and the
 * publishing, whose netlink transaction runs on the thread pool, one at a
 * time (a newer text waits in "next").
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <endian.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>
#include <nftables/libnftables.h>
#include <uv.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "../policy/policy.h"
#include "nfq.h"
#include "nfq_local.h"

#define KERNEL_TABLE		"mxbridge_classify"
#define KERNEL_FOLLOW_MS	2000	/* the divert record, the ifindexes */
#define KERNEL_PRIORITY		-151	/* before the script's mangle chain */
#define KERNEL_BRIDGE_PRIORITY	-310	/* before the script's divert (-300) */
#define KERNEL_BRIDGE_FLOWS	262144	/* keys (two a flow) at most */
#define KERNEL_BRIDGE_CLOSE_S	30	/* an entry's life after FIN or RST */

static const char *const kernel_dirs[2] = { "in", "out" };
static const char *const kernel_acts[3] = { "proxy", "pass", "drop" };

/* the daemon thread's classifier; one per process */
struct nfq_kernel {
	uv_loop_t		*loop;
	struct nft_ctx		*nft;		/* the owner socket; NULL: none */
	uv_timer_t		 timer;
	uv_work_t		 work;
	int			 busy;		/* work in the pool */
	int			 down;		/* shutdown: free when idle */
	int			 loaded;	/* the last publish took */
	char			*text;		/* being published */
	char			*next;		/* waiting for the pool */
	char			*published;	/* the text loaded */
	int			 rc;		/* of the work */
	char			*err;		/* of the work */
};

/* the daemon thread's alone (start, reload, timer, stats, shutdown) */
static struct nfq_kernel	*kn;

/* ------------------------------------------------------------ ruleset */

/* kernel_record_word - the value of KEY= in the record, or -1 */
static int
kernel_record_word(const char *rec, const char *key, char *out, size_t len)
{
	const char *w;
	size_t n;

	if ((w = nfq_record_value(rec, key)) == NULL ||
	    (n = strcspn(w, " ")) == 0 || n >= len)
		return -1;
	memcpy(out, w, n);
	out[n] = '\0';
	return 0;
}

/* kernel_name_ok - an interface name that can go into nft text */
static int
kernel_name_ok(const char *name)
{
	const char *s;

	if (*name == '\0' || strlen(name) >= IF_NAMESIZE)
		return 0;
	for (s = name; *s != '\0'; s++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789_.:@-", *s) == NULL)
			return 0;
	return 1;
}

int
nfq_record_divert(const char *rec, struct nfq_divert *d)
{
	const char *s;
	char word[16];
	unsigned long v;
	char *end;
	int nports = 0;

	memset(d, 0, sizeof(*d));
	if (kernel_record_word(rec, "br", d->bridge, sizeof(d->bridge)) == -1 ||
	    kernel_record_word(rec, "s", d->smtp, sizeof(d->smtp)) == -1)
		return -1;
	/* both go into nft text: an interface name, a list of ports */
	if (!kernel_name_ok(d->bridge))
		return -1;
	/* t=: the fast path's idle timeout (absent: the script has none) */
	if (kernel_record_word(rec, "t", word, sizeof(word)) == 0) {
		v = strtoul(word, &end, 10);
		if (*end != '\0' || end == word || v > 86400)
			return -1;
		d->fastto = (unsigned)v;
	}
	for (s = d->smtp; ; s = end + 1) {
		if (*s < '0' || *s > '9')
			return -1;
		v = strtoul(s, &end, 10);
		if (v == 0 || v > 65535 || ++nports > 15 ||
		    (*end != ',' && *end != '\0'))
			return -1;
		if (*end == '\0')
			break;
	}
	return 0;
}

/* kernel_class - the mark bits of direction dir's action */
static uint32_t
kernel_class(enum policy_dir dir, enum policy_action action)
{
	struct policy_class cls;

	memset(&cls, 0, sizeof(cls));
	cls.dir = dir;
	cls.action = action;
	return nfq_verdict_mark(0, &cls);
}

/* kernel_listed - is the item already in the list "A, B, ..."? */
static int
kernel_listed(const struct buf *els, const char *item)
{
	size_t n = strlen(item), i;

	for (i = 0; i + n <= els->len; i++)
		if ((i == 0 || els->data[i - 1] == ' ') &&
		    memcmp(els->data + i, item, n) == 0 &&
		    (i + n == els->len || els->data[i + n] == ','))
			return 1;
	return 0;
}

/* kernel_elements - "add element" of table t's set with the list els,
 * if any */
static void
kernel_elements(struct buf *out, const char *t, const char *set,
    struct buf *els)
{
	if (els->len > 0) {
		buf_printf(out, "add element %s %s { ", t, set);
		buf_append(out, els->data, els->len);
		buf_puts(out, " }\n");
	}
	buf_free(els);
}

/* kernel_net_elements - one set's networks of family */
static void
kernel_net_elements(struct buf *out, const char *t, const char *set,
    int family, const struct addr_net *nets, size_t n)
{
	char ip[INET6_ADDRSTRLEN];
	struct buf els;
	size_t i;

	buf_init(&els);
	for (i = 0; i < n; i++) {
		if (nets[i].family != family ||
		    inet_ntop(family, nets[i].addr, ip, sizeof(ip)) == NULL)
			continue;
		buf_printf(&els, "%s%s/%u", els.len > 0 ? ", " : "", ip,
		    nets[i].prefixlen);
	}
	kernel_elements(out, t, set, &els);
}

/* kernel_servers - the protected domains' servers of family: address
 * and port, as policy_domain_by_server matches them (a server statement
 * names its port; another port of the same address is not the server) */
static void
kernel_servers(struct buf *out, const char *t, const struct policy *pol,
    int family, const char *set)
{
	char ip[INET6_ADDRSTRLEN], item[INET6_ADDRSTRLEN + 16];
	const struct sockaddr_storage *ss;
	struct buf els;
	size_t i;
	int j, k, cnt;

	buf_init(&els);
	for (i = 0; i < pol->ndomains; i++) {
		const struct policy_domain *d = &pol->domains[i];

		for (k = 0; k < 2; k++) {
			cnt = k == 0 ? d->naddr : d->nfbaddr;
			for (j = 0; j < cnt; j++) {
				ss = k == 0 ? &d->addr[j] : &d->fbaddr[j];
				if (ss->ss_family != family ||
				    addr_fmt_ip((const struct sockaddr *)ss,
				    ip, sizeof(ip)) == NULL)
					continue;
				snprintf(item, sizeof(item), "%s . %u", ip,
				    addr_port((const struct sockaddr *)ss));
				/* a set takes each element once */
				if (kernel_listed(&els, item))
					continue;
				buf_printf(&els, "%s%s", els.len > 0 ?
				    ", " : "", item);
			}
		}
	}
	kernel_elements(out, t, set, &els);
}

/* kernel_port_map - one map's elements: ifindex : class | ifindex */
static void
kernel_port_map(struct buf *out, const struct policy *pol, const char *map,
    int tobox, enum policy_dir dir, unsigned (*ifindex)(const char *))
{
	struct buf els;
	size_t i;
	unsigned idx;

	/* one element a port: the parser refuses a second "port" of a name */
	buf_init(&els);
	for (i = 0; i < pol->nports; i++) {
		const struct policy_port *pp = &pol->ports[i];

		if (tobox && !pp->accept_to_box)
			continue;
		if ((idx = ifindex(pp->name)) == 0 || idx > MARK_PORT)
			continue;	/* absent: the mark cannot name it */
		buf_printf(&els, "%s0x%x : 0x%x", els.len > 0 ? ", " : "", idx,
		    (tobox ? MARK_CLASS_OUTGOING :
		    kernel_class(dir, pp->action[dir])) | idx);
	}
	kernel_elements(out, "inet " KERNEL_TABLE, map, &els);
}

/* kernel_dir_chain - the rules of chain c<dir>: bypass, port, default */
static void
kernel_dir_chain(struct buf *out, const struct policy *pol,
    enum policy_dir dir)
{
	static const char *const byp[4][2] = {
		{ "ip saddr", "bypc4" }, { "ip6 saddr", "bypc6" },
		{ "ip daddr", "byps4" }, { "ip6 daddr", "byps6" } };
	const char *d = kernel_dirs[dir];
	int i;

	for (i = 0; i < 4; i++)
		buf_printf(out, "add rule inet " KERNEL_TABLE " c%s %s @%s "
		    "meta mark set meta mark | 0x%x goto count_%s\n", d,
		    byp[i][0], byp[i][1], MARK_CLASS_PASS, d);
	buf_printf(out, "add rule inet " KERNEL_TABLE " c%s meta mark set "
	    "meta mark & 0x%x map @p%s goto count_%s\n", d, MARK_PORT, d, d);
	buf_printf(out, "add rule inet " KERNEL_TABLE " c%s meta mark set "
	    "meta mark | 0x%x goto count_%s\n", d,
	    kernel_class(dir, pol->default_action[dir]), d);
}

/* kernel_chains - table t's chains: declared (the first a base chain
 * at hook prerouting, priority prio) and emptied */
static void
kernel_chains(struct buf *out, const char *t, const char *const *chains,
    size_t n, int prio)
{
	size_t i;

	buf_printf(out, "add chain %s %s { type filter hook prerouting "
	    "priority %d; policy accept; }\n", t, chains[0], prio);
	for (i = 1; i < n; i++)
		buf_printf(out, "add chain %s %s\n", t, chains[i]);
	/* one transaction: the old rules and elements go as the new come */
	for (i = 0; i < n; i++)
		buf_printf(out, "flush chain %s %s\n", t, chains[i]);
}

/* kernel_policy_sets - table t's sets of the policy, declared, emptied
 * and filled: srv4/srv6 (address . port), the bypass networks */
static void
kernel_policy_sets(struct buf *out, const char *t, const struct policy *pol)
{
	static const char *const sets[] = { "srv4", "srv6", "bypc4", "bypc6",
	    "byps4", "byps6" };
	size_t i;

	for (i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		buf_printf(out, "add set %s %s { type ipv%c_addr%s; }\n", t,
		    sets[i], sets[i][strlen(sets[i]) - 1],
		    i < 2 ? " . inet_service" : "; flags interval; auto-merge");
		buf_printf(out, "flush set %s %s\n", t, sets[i]);
	}
	kernel_servers(out, t, pol, AF_INET, "srv4");
	kernel_servers(out, t, pol, AF_INET6, "srv6");
	for (i = 0; i < 4; i++)
		kernel_net_elements(out, t, sets[2 + i], i % 2 == 0 ? AF_INET :
		    AF_INET6, i < 2 ? pol->bypass_client : pol->bypass_server,
		    i < 2 ? pol->nbypass_client : pol->nbypass_server);
}

/*
 * The bridge table: passed flows stay on the bridge from their SYN on.
 * mxbridge-netfilter(8) diverts every packet of an SMTP flow into the
 * host stack, where the inet table above classifies its SYN; a passed
 * flow then went on through the host's routing until the script's
 * fast-path sets took its later packets.  This table, at bridge
 * prerouting before the script's divert (KERNEL_BRIDGE_PRIORITY),
 * decides "pass" for the SYN itself, from what the frame shows there:
 * the protected servers, the bypass networks, the ingress bridge port
 * (its name) and the defaults, in policy_classify()'s order.  A passed
 * SYN puts both directions of its 4-tuple into flows4/flows6, and every
 * frame of a flow found there is marked MARK_BRIDGED, which the script's
 * chain takes as "not diverted": the host stack never sees the flow.
 *
 * Whatever is not "pass" is left to the divert and the inet table, and
 * so is anything the frame cannot tell: a frame for the box itself (the
 * bridge's MAC address), a flow between two SMTP ports (which end is
 * the server?), a port of another bridge.  The sets outlive a reload
 * (a passed flow stays passed, as its connmark keeps it in the host
 * path), a new SYN is classified again and a SYN that is not passed
 * takes its 4-tuple out (port reuse).  An entry expires after the
 * script's fast-path timeout (the record's t=) without traffic, or
 * KERNEL_BRIDGE_CLOSE_S after a FIN or RST; the flow's next frame then
 * takes the divert and is routed on (conntrack picks it up mid-stream),
 * and the chain at hook output puts it back.  With t=0 (the script's
 * fast path off) the table is not made.  The bridge's ports come from
 * the kernel, not from the script's -p: on a port the script does not
 * divert a passed SYN is counted here too (it would cross anyway).
 */
static const char *const kernel_bridge_chains[] = { "pre", "syn", "cin",
    "cout", "keep_in", "keep_out", "keep", "forget", "known4", "known6",
    "ocin", "ocout", "again" };

/* kernel_bridge_port_map - vin/vout: a bridge port's verdict for the
 * direction; ports of the policy that the bridge lacks do no harm */
static void
kernel_bridge_port_map(struct buf *out, const char *t,
    const struct policy *pol, enum policy_dir dir)
{
	struct buf els;
	size_t i;

	buf_init(&els);
	for (i = 0; i < pol->nports; i++) {
		const struct policy_port *pp = &pol->ports[i];

		if (!kernel_name_ok(pp->name))
			continue;	/* cannot be one of the bridge's */
		buf_printf(&els, "%s\"%s\" : goto %s", els.len > 0 ? ", " :
		    "", pp->name, pp->action[dir] == POLICY_PASS ?
		    (dir == POLICY_DIR_IN ? "keep_in" : "keep_out") :
		    "forget");
	}
	kernel_elements(out, t, dir == POLICY_DIR_IN ? "vin" : "vout", &els);
}

/* kernel_bridge_index_map - xin/xout: the same verdicts keyed by the
 * ifindex the divert put into the mark: "again" for a pass */
static void
kernel_bridge_index_map(struct buf *out, const char *t,
    const struct policy *pol, enum policy_dir dir,
    unsigned (*ifindex)(const char *))
{
	struct buf els;
	size_t i;
	unsigned idx;

	buf_init(&els);
	for (i = 0; i < pol->nports; i++) {
		const struct policy_port *pp = &pol->ports[i];

		if ((idx = ifindex(pp->name)) == 0 || idx > MARK_PORT)
			continue;
		buf_printf(&els, "%s0x%x : %s", els.len > 0 ? ", " : "", idx,
		    pp->action[dir] == POLICY_PASS ? "goto again" : "return");
	}
	kernel_elements(out, t, dir == POLICY_DIR_IN ? "xin" : "xout", &els);
}

/* kernel_bridge_dir - chain c<dir>: bypass, the port, the default */
static void
kernel_bridge_dir(struct buf *out, const char *t, const struct policy *pol,
    enum policy_dir dir, int routed)
{
	/* the client is the frame's source, the server its destination */
	static const char *const byp[4][2] = {
		{ "ip saddr", "bypc4" }, { "ip6 saddr", "bypc6" },
		{ "ip daddr", "byps4" }, { "ip6 daddr", "byps6" } };
	const char *d = kernel_dirs[dir], *c = routed ? "oc" : "c";
	char keep[16];
	int i;

	/* a SYN at prerouting: keep_<dir> or forget; a frame the host
	 * routed (hook output): again, or nothing */
	snprintf(keep, sizeof(keep), routed ? "again" : "keep_%s", d);
	for (i = 0; i < 4; i++)
		buf_printf(out, "add rule %s %s%s %s @%s goto %s\n", t, c, d,
		    byp[i][0], byp[i][1], keep);
	if (routed)
		buf_printf(out, "add rule %s %s%s meta mark & 0x%x vmap "
		    "@x%s\n", t, c, d, MARK_PORT, d);
	else
		buf_printf(out, "add rule %s %s%s iifname vmap @v%s\n", t, c,
		    d, d);
	if (pol->default_action[dir] == POLICY_PASS)
		buf_printf(out, "add rule %s %s%s goto %s\n", t, c, d, keep);
	else if (!routed)
		buf_printf(out, "add rule %s %s%s goto forget\n", t, c, d);
}

/* kernel_bridge_server - chain's rules that find the server of a frame
 * from the client (a SYN, or a routed frame from the client's side): its
 * destination, incoming (goto <p>cin) if that is a protected server,
 * else outgoing (<p>cout); a frame between two SMTP ports cannot tell,
 * and takes verdict both */
static void
kernel_bridge_server(struct buf *out, const char *t, const char *chain,
    const char *smtp, const char *both, const char *p)
{
	buf_printf(out, "add rule %s %s tcp dport != { %s } return\n", t,
	    chain, smtp);
	buf_printf(out, "add rule %s %s tcp sport { %s } %s\n", t, chain, smtp,
	    both);
	buf_printf(out, "add rule %s %s ip daddr . tcp dport @srv4 goto "
	    "%scin\n", t, chain, p);
	buf_printf(out, "add rule %s %s ip6 daddr . tcp dport @srv6 goto "
	    "%scin\n", t, chain, p);
	buf_printf(out, "add rule %s %s goto %scout\n", t, chain, p);
}

/* kernel_bridge_ruleset - the bridge table's commands, or its removal
 * when the divert keeps no flow on the bridge or the bridge is unknown */
static void
kernel_bridge_ruleset(const struct policy *pol, const struct nfq_divert *dv,
    unsigned (*ifindex)(const char *), struct buf *out)
{
	static const char *const key[2][2] = {
		{ "ip saddr . ip daddr . tcp sport . tcp dport",
		  "ip daddr . ip saddr . tcp dport . tcp sport" },
		{ "ip6 saddr . ip6 daddr . tcp sport . tcp dport",
		  "ip6 daddr . ip6 saddr . tcp dport . tcp sport" } };
	const char *t = "bridge " KERNEL_TABLE;
	size_t n = sizeof(kernel_bridge_chains) /
	    sizeof(kernel_bridge_chains[0]);
	int f, d;

	buf_printf(out, "add table %s { flags owner; }\n", t);
	if (dv->fastto == 0 || dv->mac[0] == '\0' || dv->ports[0] == '\0') {
		buf_printf(out, "delete table %s\n", t);
		return;
	}
	buf_printf(out, "add counter %s in_pass\nadd counter %s out_pass\n",
	    t, t);
	/* no timeout of their own: each update names it, so that a new t=
	 * needs no new set (and the flows in it stay) */
	for (f = 0; f < 2; f++)
		buf_printf(out, "add set %s flows%c { type %s . %s . "
		    "inet_service . inet_service; flags dynamic,timeout; "
		    "size %u; }\n", t, f == 0 ? '4' : '6',
		    f == 0 ? "ipv4_addr" : "ipv6_addr",
		    f == 0 ? "ipv4_addr" : "ipv6_addr", KERNEL_BRIDGE_FLOWS);
	kernel_policy_sets(out, t, pol);
	/* the maps name chains: emptied before, filled after the chains */
	for (d = 0; d < 2; d++)
		buf_printf(out, "add map %s v%s { type ifname : verdict; }\n"
		    "flush map %s v%s\n"
		    "add map %s x%s { type mark : verdict; }\n"
		    "flush map %s x%s\n", t, kernel_dirs[d], t, kernel_dirs[d],
		    t, kernel_dirs[d], t, kernel_dirs[d]);
	kernel_chains(out, t, kernel_bridge_chains, n,
	    KERNEL_BRIDGE_PRIORITY);
	buf_printf(out, "add chain %s out { type filter hook output priority "
	    "0; policy accept; }\nflush chain %s out\n", t, t);
	for (d = 0; d < 2; d++) {
		kernel_bridge_port_map(out, t, pol, (enum policy_dir)d);
		kernel_bridge_index_map(out, t, pol, (enum policy_dir)d,
		    ifindex);
	}

	/* a frame of a flow in the sets first: the common case, one lookup
	 * (a SYN is classified again: port reuse, a new policy) */
	for (f = 0; f < 2; f++)
		buf_printf(out, "add rule %s pre tcp flags & (syn|ack) != syn "
		    "%s @flows%c goto known%c\n", t, key[f][0], "46"[f],
		    "46"[f]);
	buf_printf(out, "add rule %s pre iifname != { %s } return\n", t,
	    dv->ports);
	buf_printf(out, "add rule %s pre meta l4proto != tcp return\n", t);
	buf_printf(out, "add rule %s pre ether daddr %s return\n", t, dv->mac);
	buf_printf(out, "add rule %s pre tcp flags & (syn|ack) == syn "
	    "goto syn\n", t);
	for (f = 0; f < 2; f++) {
		/* a FIN or RST: the flow ends, its entries go soon */
		buf_printf(out, "add rule %s known%c tcp flags & (fin|rst) != 0 "
		    "update @flows%c { %s timeout %us } "
		    "update @flows%c { %s timeout %us } meta mark set "
		    "meta mark | 0x%x accept\n", t, "46"[f],
		    "46"[f], key[f][0], KERNEL_BRIDGE_CLOSE_S, "46"[f],
		    key[f][1], KERNEL_BRIDGE_CLOSE_S, MARK_BRIDGED);
		buf_printf(out, "add rule %s known%c update @flows%c "
		    "{ %s timeout %us } meta mark set meta mark | 0x%x "
		    "accept\n", t, "46"[f], "46"[f], key[f][0],
		    dv->fastto, MARK_BRIDGED);
	}
	kernel_bridge_server(out, t, "syn", dv->smtp, "goto forget", "");
	for (d = 0; d < 2; d++) {
		kernel_bridge_dir(out, t, pol, (enum policy_dir)d, 0);
		kernel_bridge_dir(out, t, pol, (enum policy_dir)d, 1);
		buf_printf(out, "add rule %s keep_%s counter name %s_pass "
		    "goto keep\n", t, kernel_dirs[d], kernel_dirs[d]);
	}
	/* A flow whose entry expired, or that was open before the daemon
	 * came: the host routes its frames on without a class (conntrack
	 * took it up in the middle).  Its first frame from the client's
	 * side (its mark holds the client's port) that leaves through the
	 * bridge puts it back if its class is pass.  Frames of proxied
	 * flows are never routed on (they are the box's own, with a class
	 * or the daemon's mark), those with a class are the script's. */
	buf_printf(out, "add rule %s out oifname != { %s } return\n", t,
	    dv->ports);
	buf_printf(out, "add rule %s out meta l4proto != tcp return\n", t);
	buf_printf(out, "add rule %s out meta mark & 0x%x != 0 return\n", t,
	    ~MARK_PORT);
	buf_printf(out, "add rule %s out meta mark & 0x%x == 0 return\n", t,
	    MARK_PORT);
	buf_printf(out, "add rule %s out tcp flags & (syn|fin|rst) != 0 "
	    "return\n", t);
	kernel_bridge_server(out, t, "out", dv->smtp, "return", "o");
	for (f = 0; f < 2; f++) {
		buf_printf(out, "add rule %s keep ether type %s update "
		    "@flows%c { %s timeout %us } update @flows%c { %s timeout "
		    "%us } meta mark set meta mark | 0x%x accept\n", t,
		    f == 0 ? "ip" : "ip6", "46"[f], key[f][0], dv->fastto,
		    "46"[f], key[f][1], dv->fastto, MARK_BRIDGED);
		buf_printf(out, "add rule %s again ether type %s update "
		    "@flows%c { %s timeout %us } update @flows%c { %s timeout "
		    "%us }\n", t, f == 0 ? "ip" : "ip6", "46"[f], key[f][0],
		    dv->fastto, "46"[f], key[f][1], dv->fastto);
		buf_printf(out, "add rule %s forget ether type %s delete "
		    "@flows%c { %s } delete @flows%c { %s }\n", t,
		    f == 0 ? "ip" : "ip6", "46"[f], key[f][0], "46"[f],
		    key[f][1]);
	}
}

void
nfq_kernel_ruleset(const struct policy *pol, const struct nfq_divert *dv,
    unsigned (*ifindex)(const char *), struct buf *out)
{
	static const char *const maps[] = { "pin", "pout", "tobox" };
	static const char *const chains[] = { "pre", "cin", "cout", "tobox",
	    "count_in", "count_out" };
	const char *t = "inet " KERNEL_TABLE;
	size_t i;
	int d, a;

	buf_printf(out, "add table %s { flags owner; }\n", t);
	for (d = 0; d < 2; d++)
		for (a = 0; a < 3; a++)
			buf_printf(out, "add counter %s %s_%s\n", t,
			    kernel_dirs[d], kernel_acts[a]);
	for (i = 0; i < sizeof(maps) / sizeof(maps[0]); i++)
		buf_printf(out, "add map %s %s { type mark : mark; }\n"
		    "flush map %s %s\n", t, maps[i], t, maps[i]);
	kernel_chains(out, t, chains, sizeof(chains) / sizeof(chains[0]),
	    KERNEL_PRIORITY);
	kernel_policy_sets(out, t, pol);
	kernel_port_map(out, pol, "pin", 0, POLICY_DIR_IN, ifindex);
	kernel_port_map(out, pol, "pout", 0, POLICY_DIR_OUT, ifindex);
	kernel_port_map(out, pol, "tobox", 1, POLICY_DIR_OUT, ifindex);

	/* the first packet of a new SMTP flow the bridge diverted, as the
	 * script's queue rule matches it; everything else is left alone */
	buf_printf(out, "add rule %s pre iifname != \"%s\" return\n", t,
	    dv->bridge);
	buf_printf(out, "add rule %s pre meta mark & 0x%x != 0 return\n", t,
	    ~MARK_PORT);
	buf_printf(out, "add rule %s pre meta mark & 0x%x == 0 return\n", t,
	    MARK_PORT);
	buf_printf(out, "add rule %s pre tcp flags & (fin|syn|rst|ack) != syn "
	    "return\n", t);
	buf_printf(out, "add rule %s pre ct state != new return\n", t);
	/* a SYN sent again: the flow has its class in the connmark, which
	 * the script's chain restores (and the queue never saw it again) */
	buf_printf(out, "add rule %s pre ct mark & 0x%x != 0 return\n", t,
	    MARK_CLASS);
	buf_printf(out, "add rule %s pre tcp dport != { %s } return\n", t,
	    dv->smtp);
	/* addressed to the box itself (addr_is_self: its addresses,
	 * loopback, unspecified) */
	buf_printf(out, "add rule %s pre fib daddr type local goto tobox\n", t);
	buf_printf(out, "add rule %s pre ip daddr { 0.0.0.0, 127.0.0.0/8 } "
	    "goto tobox\n", t);
	buf_printf(out, "add rule %s pre ip6 daddr { ::, ::1 } goto tobox\n",
	    t);
	buf_printf(out, "add rule %s pre ip daddr . tcp dport @srv4 goto cin\n",
	    t);
	buf_printf(out, "add rule %s pre ip6 daddr . tcp dport @srv6 goto "
	    "cin\n", t);
	buf_printf(out, "add rule %s pre goto cout\n", t);
	buf_printf(out, "add rule %s tobox meta mark set meta mark & 0x%x map "
	    "@tobox goto count_out\n", t, MARK_PORT);
	buf_printf(out, "add rule %s tobox meta mark set meta mark | 0x%x "
	    "goto count_out\n", t, MARK_CLASS_DROP);
	kernel_dir_chain(out, pol, POLICY_DIR_IN);
	kernel_dir_chain(out, pol, POLICY_DIR_OUT);
	/* counted by the class the mark ends with; accept ends this chain
	 * only, the script's chain acts on the mark next */
	for (d = 0; d < 2; d++)
		for (a = 0; a < 3; a++)
			buf_printf(out, "add rule %s count_%s meta mark & 0x%x "
			    "== 0x%x counter name %s_%s accept\n", t,
			    kernel_dirs[d], MARK_CLASS,
			    kernel_class((enum policy_dir)d,
			    (enum policy_action)a), kernel_dirs[d],
			    kernel_acts[a]);
	kernel_bridge_ruleset(pol, dv, ifindex, out);
}

/* ------------------------------------------------------------ counters */

struct kernel_counts {
	uint64_t	(*dec)[3];
	int		 found;
};

/* kernel_counter_cb - one counter object of the table */
static int
kernel_counter_cb(const struct nlmsghdr *nlh, void *arg)
{
	struct kernel_counts *kc = arg;
	struct nlattr *a, *c;	/* not const: the for_each macros cast */
	const char *name = NULL;
	uint64_t packets = 0;
	int d, x;

	mnl_attr_for_each(a, nlh, sizeof(struct nfgenmsg)) {
		switch (mnl_attr_get_type(a)) {
		case NFTA_OBJ_NAME:
			if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0)
				name = mnl_attr_get_str(a);
			break;
		case NFTA_OBJ_DATA:
			mnl_attr_for_each_nested(c, a)
				if (mnl_attr_get_type(c) ==
				    NFTA_COUNTER_PACKETS &&
				    mnl_attr_validate(c, MNL_TYPE_U64) == 0)
					packets = be64toh(mnl_attr_get_u64(c));
			break;
		}
	}
	if (name == NULL)
		return MNL_CB_OK;
	for (d = 0; d < 2; d++)
		for (x = 0; x < 3; x++) {
			char want[16];

			snprintf(want, sizeof(want), "%s_%s", kernel_dirs[d],
			    kernel_acts[x]);
			if (strcmp(name, want) == 0) {
				kc->dec[d][x] += packets;
				kc->found = 1;
			}
		}
	return MNL_CB_OK;
}

/* kernel_counter_req - the dump request: this table's counters */
static void
kernel_counter_req(struct nlmsghdr *nlh)
{
	mnl_attr_put_strz(nlh, NFTA_OBJ_TABLE, KERNEL_TABLE);
	mnl_attr_put_u32(nlh, NFTA_OBJ_TYPE, htonl(NFT_OBJECT_COUNTER));
}

int
nfq_kernel_counts(uint64_t dec[2][3], uint64_t *bridged)
{
	uint64_t bdec[2][3];
	struct kernel_counts kc = { dec, 0 }, kb = { bdec, 0 };
	int d;

	*bridged = 0;
	if (kn == NULL || !kn->loaded)
		return 0;
	if (nfq_nft_query(NFT_MSG_GETOBJ, NLM_F_DUMP, NFPROTO_INET,
	    kernel_counter_req, kernel_counter_cb, &kc) == -1)
		return 0;
	/* the bridge table's passed SYNs never reach the inet table */
	memset(bdec, 0, sizeof(bdec));
	if (nfq_nft_query(NFT_MSG_GETOBJ, NLM_F_DUMP, NFPROTO_BRIDGE,
	    kernel_counter_req, kernel_counter_cb, &kb) == 0 && kb.found)
		for (d = 0; d < 2; d++) {
			dec[d][POLICY_PASS] += bdec[d][POLICY_PASS];
			*bridged += bdec[d][POLICY_PASS];
		}
	return kc.found;
}

/* ------------------------------------------------------------ publishing */

/* kernel_work - the transaction, on the pool: the context is this
 * work's alone while busy */
static void
kernel_work(uv_work_t *req)
{
	struct nfq_kernel *k = req->data;
	const char *e;

	k->rc = nft_run_cmd_from_buffer(k->nft, k->text);
	free(k->err);
	k->err = NULL;
	if (k->rc != 0 && (e = nft_ctx_get_error_buffer(k->nft)) != NULL)
		k->err = xstrdup(e);
	/* the buffers grow with every command otherwise */
	nft_ctx_unbuffer_error(k->nft);
	nft_ctx_buffer_error(k->nft);
	nft_ctx_unbuffer_output(k->nft);
	nft_ctx_buffer_output(k->nft);
}

static void	kernel_free(struct nfq_kernel *);
static void	kernel_close(struct nfq_kernel *);

static void	kernel_publish(struct nfq_kernel *, char *);

/* kernel_done - the transaction's outcome, on the daemon's thread */
static void
kernel_done(uv_work_t *req, int status)
{
	struct nfq_kernel *k = req->data;
	char *next;

	k->busy = 0;
	if (k->down) {
		kernel_free(k);
		return;
	}
	/* a reload to "classifier queue" came while this ran, and could not
	 * close the context then: now */
	if (policy_current()->classifier != POLICY_CLASSIFIER_KERNEL) {
		free(k->text);
		k->text = NULL;
		free(k->next);
		k->next = NULL;
		kernel_close(k);
		return;
	}
	if (status == 0 && k->rc == 0) {
		if (!k->loaded)
			log_info("nfq: kernel classifier loaded table=inet %s: "
			    "new flows classified in the kernel, the queue "
			    "behind it", KERNEL_TABLE);
		k->loaded = 1;
		free(k->published);
		k->published = k->text;
	} else {
		/* the table is as it was: one transaction */
		log_warnx("nfq: kernel classifier not loaded table=inet %s: "
		    "%s; new flows are classified through the queue",
		    KERNEL_TABLE, k->err != NULL ? k->err : "failed");
		free(k->published);
		k->published = k->text;	/* not again until it changes */
	}
	k->text = NULL;
	if ((next = k->next) != NULL) {
		k->next = NULL;
		kernel_publish(k, next);
	}
}

/* kernel_publish - load text (taken), now or after the one in flight */
static void
kernel_publish(struct nfq_kernel *k, char *text)
{
	if (k->busy) {
		free(k->next);
		k->next = text;
		return;
	}
	if (k->published != NULL && strcmp(k->published, text) == 0) {
		free(text);
		return;
	}
	k->text = text;
	k->busy = 1;
	k->work.data = k;
	if (uv_queue_work(k->loop, &k->work, kernel_work, kernel_done) != 0) {
		k->busy = 0;
		kernel_work(&k->work);
		kernel_done(&k->work, 0);
	}
}

/* kernel_ifindex - a bridge port's ifindex now; 0 if absent */
static unsigned
kernel_ifindex(const char *name)
{
	return if_nametoindex(name);
}

/* the bridge's MAC address and ports, from one RTM_GETLINK dump */
struct kernel_links {
	struct nfq_divert	*dv;
	unsigned		 br;		/* the bridge's ifindex */
	size_t			 len;		/* of dv->ports */
};

/* kernel_link_cb - one link: the bridge itself, or one of its ports */
static int
kernel_link_cb(const struct nlmsghdr *nlh, void *arg)
{
	struct kernel_links *kl = arg;
	const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
	struct nlattr *a;	/* not const: mnl_attr_for_each casts it */
	const char *name = NULL;
	const uint8_t *mac = NULL;
	unsigned master = 0;
	int n;

	if (nlh->nlmsg_type != RTM_NEWLINK ||
	    nlh->nlmsg_len < NLMSG_LENGTH(sizeof(*ifi)))
		return MNL_CB_OK;
	mnl_attr_for_each(a, nlh, sizeof(*ifi)) {
		switch (mnl_attr_get_type(a)) {
		case IFLA_IFNAME:
			if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0)
				name = mnl_attr_get_str(a);
			break;
		case IFLA_MASTER:
			if (mnl_attr_validate(a, MNL_TYPE_U32) == 0)
				master = mnl_attr_get_u32(a);
			break;
		case IFLA_ADDRESS:
			if (mnl_attr_get_payload_len(a) == 6)
				mac = mnl_attr_get_payload(a);
			break;
		}
	}
	if ((unsigned)ifi->ifi_index == kl->br && mac != NULL)
		snprintf(kl->dv->mac, sizeof(kl->dv->mac),
		    "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
		    mac[3], mac[4], mac[5]);
	else if (master == kl->br && name != NULL && kernel_name_ok(name)) {
		/* a port the list has no room for stays with the divert */
		n = snprintf(kl->dv->ports + kl->len,
		    sizeof(kl->dv->ports) - kl->len, "%s\"%s\"",
		    kl->len > 0 ? ", " : "", name);
		if (n > 0 && (size_t)n < sizeof(kl->dv->ports) - kl->len)
			kl->len += (size_t)n;
		else
			kl->dv->ports[kl->len] = '\0';
	}
	return MNL_CB_OK;
}

/* kernel_bridge_links - dv's bridge's MAC address and ports now (both
 * left empty when the bridge or the dump is not there) */
static void
kernel_bridge_links(struct nfq_divert *dv)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct kernel_links kl = { dv, 0, 0 };
	struct mnl_socket *nl;
	struct nlmsghdr *nlh;
	struct ifinfomsg *ifi;
	unsigned portid, seq = (unsigned)time(NULL);
	ssize_t n;
	int r = MNL_CB_OK;

	dv->mac[0] = dv->ports[0] = '\0';
	if ((kl.br = if_nametoindex(dv->bridge)) == 0 ||
	    (nl = mnl_socket_open(NETLINK_ROUTE)) == NULL)
		return;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) == -1)
		goto done;
	portid = mnl_socket_get_portid(nl);
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_GETLINK;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = seq;
	ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) == -1)
		goto done;
	while (r > MNL_CB_STOP) {
		if ((n = mnl_socket_recvfrom(nl, buf, sizeof(buf))) <= 0) {
			r = MNL_CB_ERROR;
			break;
		}
		r = mnl_cb_run(buf, (size_t)n, seq, portid, kernel_link_cb,
		    &kl);
	}
	if (r == MNL_CB_ERROR)
		dv->mac[0] = dv->ports[0] = '\0';	/* a partial list */
done:
	mnl_socket_close(nl);
}

/* kernel_follow - the ruleset for the current snapshot, the divert
 * record and the ports as they are now; published if it changed */
static void
kernel_follow(struct nfq_kernel *k)
{
	const struct policy *pol = policy_current();
	struct nfq_divert dv;
	char rec[256];
	struct buf b;

	if (k->down || pol->classifier != POLICY_CLASSIFIER_KERNEL)
		return;
	if (nfq_record_read_text(rec, sizeof(rec)) != 1 ||
	    nfq_record_divert(rec, &dv) == -1)
		return;		/* no divert, or one that names no ports */
	if (dv.fastto > 0)
		kernel_bridge_links(&dv);
	buf_init(&b);
	nfq_kernel_ruleset(pol, &dv, kernel_ifindex, &b);
	buf_append(&b, "", 1);
	kernel_publish(k, b.data);	/* taken */
}

static void
kernel_timer_cb(uv_timer_t *t)
{
	kernel_follow(t->data);
}

/* kernel_open - the owner context; NULL and logged if there is none */
static struct nft_ctx *
kernel_open(void)
{
	struct nft_ctx *nft;

	if ((nft = nft_ctx_new(NFT_CTX_DEFAULT)) == NULL) {
		log_warnx("nfq: no nftables context: new flows are "
		    "classified through the queue");
		return NULL;
	}
	nft_ctx_buffer_output(nft);
	nft_ctx_buffer_error(nft);
	return nft;
}

int
nfq_kernel_start(uv_loop_t *loop)
{
	if (kn != NULL)
		return 0;
	kn = xcalloc(1, sizeof(*kn));
	kn->loop = loop;
	uv_timer_init(loop, &kn->timer);
	kn->timer.data = kn;
	uv_unref((uv_handle_t *)&kn->timer);
	uv_timer_start(&kn->timer, kernel_timer_cb, KERNEL_FOLLOW_MS,
	    KERNEL_FOLLOW_MS);
	nfq_kernel_reload();
	return 0;
}

/* kernel_close - the table goes with the socket: "classifier queue" */
static void
kernel_close(struct nfq_kernel *k)
{
	if (k->nft == NULL || k->busy)
		return;
	nft_ctx_free(k->nft);
	k->nft = NULL;
	if (k->loaded)
		log_info("nfq: kernel classifier removed table=inet %s",
		    KERNEL_TABLE);
	k->loaded = 0;
	free(k->published);
	k->published = NULL;
}

void
nfq_kernel_reload(void)
{
	if (kn == NULL || kn->down)
		return;
	if (policy_current()->classifier != POLICY_CLASSIFIER_KERNEL) {
		free(kn->next);
		kn->next = NULL;
		kernel_close(kn);
		return;
	}
	if (kn->nft == NULL && !kn->busy && (kn->nft = kernel_open()) == NULL)
		return;
	kernel_follow(kn);
}

static void
kernel_timer_close_cb(uv_handle_t *h)
{
	struct nfq_kernel *k = h->data;

	k->timer.data = NULL;
	if (!k->busy)
		kernel_free(k);
}

/* kernel_free - the context (and with it the table), the texts */
static void
kernel_free(struct nfq_kernel *k)
{
	if (k->timer.data != NULL)
		return;			/* the timer's close frees it */
	if (k->nft != NULL)
		nft_ctx_free(k->nft);
	free(k->text);
	free(k->next);
	free(k->published);
	free(k->err);
	free(k);
}

void
nfq_kernel_shutdown(void)
{
	struct nfq_kernel *k = kn;

	if (k == NULL || k->down)
		return;
	/* new flows stop here as they do at the queue: the table goes now
	 * (its socket closed) unless a transaction holds the context, then
	 * when it ends */
	k->down = 1;
	kn = NULL;
	if (!k->busy && k->nft != NULL) {
		nft_ctx_free(k->nft);
		k->nft = NULL;
	}
	uv_close((uv_handle_t *)&k->timer, kernel_timer_close_cb);
}
