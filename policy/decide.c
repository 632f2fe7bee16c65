/*
 * decide.c - every decision taken from a loaded policy: the class of a new
 * flow, whose server a destination is, whether a client-chosen server is
 * honoured, where a recipient goes, whether a recipient may be relayed
 * (with the open-relay hardening that comes before any rule) or has to be
 * verified at its server, hide-box, and connection limits.  Nothing here
 * changes a snapshot or allocates; a snapshot may be shared by every
 * caller (policy_conn_admit changes only the caller's rate bucket).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../common/addr.h"
#include "../common/smtp.h"
#include "policy.h"
#include "policy_local.h"

#define ADDR_MAX	1024		/* longest mailbox looked at */

#define MSG_NORELAY	"5.7.1 Relay access denied"
#define MSG_REJECT	"5.7.1 Recipient address rejected by policy"
#define MSG_TEMPFAIL	"4.7.1 Recipient address deferred by policy, try " \
			"again later"
#define MSG_SYNTAX	"5.1.3 Bad recipient address syntax"

/* a mailbox taken apart for matching */
struct mailbox {
	char		 full[ADDR_MAX];	/* "local@domain", no route */
	const char	*domain;		/* in full; NULL: none */
	int		 null;			/* the null path <> */
	int		 badlocal;		/* '%', '!' or '@' in local */
	int		 routed;		/* had a source route */
	int		 literal;		/* [address] domain */
	int		 baddomain;		/* not a host name */
};

const struct policy_port *
policy_port_by_name(const struct policy *pol, const char *name)
{
	size_t i;

	if (name == NULL)
		return NULL;
	for (i = 0; i < pol->nports; i++)
		if (strcmp(pol->ports[i].name, name) == 0)
			return &pol->ports[i];
	return NULL;
}

/*
 * addr_in_list - sa equals one of n addresses, port included (each
 * address carries its own: server statements may name different ports)
 */
static int
addr_in_list(const struct sockaddr *sa, const struct sockaddr_storage *list,
    int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (addr_equal_ip(sa, (const struct sockaddr *)&list[i]) &&
		    addr_port(sa) == addr_port((const struct sockaddr *)&list[i]))
			return 1;
	return 0;
}

/*
 * policy_domain_by_server - the domain one of whose server addresses (of
 * either family) or fallback addresses is sa
 */
const struct policy_domain *
policy_domain_by_server(const struct policy *pol, const struct sockaddr *sa)
{
	const struct policy_domain *d;
	size_t i;

	if (sa == NULL)
		return NULL;
	for (i = 0; i < pol->ndomains; i++) {
		d = &pol->domains[i];
		if (addr_in_list(sa, d->addr, d->naddr) ||
		    addr_in_list(sa, d->fbaddr, d->nfbaddr))
			return d;
	}
	return NULL;
}

/* policy_domain_by_name - exact, case-insensitive; a trailing dot is ok */
const struct policy_domain *
policy_domain_by_name(const struct policy *pol, const char *name)
{
	size_t i, len;

	if (name == NULL)
		return NULL;
	len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0)
		return NULL;
	for (i = 0; i < pol->ndomains; i++)
		if (strlen(pol->domains[i].name) == len &&
		    strncasecmp(pol->domains[i].name, name, len) == 0)
			return &pol->domains[i];
	return NULL;
}

/* net_in_list - sa is inside one of n networks */
static int
net_in_list(const struct sockaddr *sa, const struct addr_net *list, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (addr_net_match(&list[i], sa))
			return 1;
	return 0;
}

int
policy_metrics_allowed(const struct policy *pol, const struct sockaddr *sa)
{
	return pol->nmetrics_allow == 0 ||
	    net_in_list(sa, pol->metrics_allow, pol->nmetrics_allow);
}

/* policy_classify - direction and action for a new flow; -1 if not IP */
int
policy_classify(const struct policy *pol, const struct sockaddr *src,
    const struct sockaddr *dst, const char *port, struct policy_class *out)
{
	const struct policy_port *pp;

	memset(out, 0, sizeof(*out));
	if ((src->sa_family != AF_INET && src->sa_family != AF_INET6) ||
	    (dst->sa_family != AF_INET && dst->sa_family != AF_INET6))
		return -1;
	out->domain = policy_domain_by_server(pol, dst);
	out->dir = out->domain != NULL ? POLICY_DIR_IN : POLICY_DIR_OUT;
	if (net_in_list(src, pol->bypass_client, pol->nbypass_client) ||
	    net_in_list(dst, pol->bypass_server, pol->nbypass_server)) {
		out->action = POLICY_PASS;
		out->reason = "bypass";
	} else if ((pp = policy_port_by_name(pol, port)) != NULL) {
		out->action = pp->action[out->dir];
		out->reason = "port";
	} else {
		out->action = pol->default_action[out->dir];
		out->reason = "default";
	}
	return 0;
}

/*
 * policy_classify_to_box - a connection addressed to the gateway itself.
 * It is never relayed anywhere: the port's accept-to-box says whether the
 * built-in MTA takes it (as outgoing mail, the client's server not
 * honoured) or whether it is refused.
 */
int
policy_classify_to_box(const struct policy *pol, const char *port,
    struct policy_class *out)
{
	const struct policy_port *pp = policy_port_by_name(pol, port);

	memset(out, 0, sizeof(*out));
	out->dir = POLICY_DIR_OUT;
	out->action = pp != NULL && pp->accept_to_box ? POLICY_PROXY :
	    POLICY_DROP;
	out->reason = "to-box";
	return 0;
}

/* policy_honour_client_server - 1: relay live to the server dialled */
int
policy_honour_client_server(const struct policy *pol,
    const struct sockaddr *client, const char *port)
{
	const struct policy_honour *h;
	const struct policy_port *pp;
	size_t i;

	for (i = 0; i < pol->nhonours; i++) {
		h = &pol->honours[i];
		if (h->has_net && (client == NULL ||
		    !addr_net_match(&h->net, client)))
			continue;
		if (h->port[0] != '\0' && (port == NULL ||
		    strcmp(h->port, port) != 0))
			continue;
		return h->honour;
	}
	if ((pp = policy_port_by_name(pol, port)) != NULL && pp->honour != -1)
		return pp->honour;
	return pol->default_honour;
}

/* policy_route_rcpt - where the MTA delivers one recipient */
enum policy_route
policy_route_rcpt(const struct policy *pol, enum policy_dir dir,
    const char *rcpt_domain, const struct sockaddr *orig_dst)
{
	const struct policy_domain *d;

	if (dir == POLICY_DIR_IN) {
		if (policy_domain_by_name(pol, rcpt_domain) != NULL)
			return POLICY_ROUTE_ORIGINAL;
		d = policy_domain_by_server(pol, orig_dst);
		if (d != NULL && d->deliver_via_server)
			return POLICY_ROUTE_ORIGINAL;
	}
	return pol->relay.host != NULL ? POLICY_ROUTE_RELAYHOST :
	    POLICY_ROUTE_MX;
}

/* local_end - the '@' before the domain: the last one outside quotes */
static char *
local_end(char *s)
{
	char *at = NULL;
	int quoted = 0;

	for (; *s != '\0'; s++) {
		if (quoted && *s == '\\' && s[1] != '\0')
			s++;
		else if (*s == '"')
			quoted = !quoted;
		else if (*s == '@' && !quoted)
			at = s;
	}
	return at;
}

/*
 * local_bad - a local part that is not RFC 5321 syntax (the one grammar
 * of it, smtp_local_part) or could route mail elsewhere ('%', '!' or '@',
 * quoted, escaped or not)
 */
static int
local_bad(const char *s, const char *end)
{
	if (s == end || smtp_local_part(s, 1) != (size_t)(end - s))
		return 1;
	for (; s < end; s++)
		if (*s == '%' || *s == '!' || *s == '@')
			return 1;
	return 0;
}

/*
 * mailbox_parse - take a path as received apart: angle brackets and any
 * source route go, the domain loses its trailing dot.  -1: unusable.
 */
static int
mailbox_parse(const char *in, struct mailbox *m)
{
	char buf[ADDR_MAX];
	char *s, *at, *colon;
	size_t len;
	int n;

	memset(m, 0, sizeof(*m));
	if (in == NULL || (len = strlen(in)) >= sizeof(buf))
		return -1;
	memcpy(buf, in, len + 1);
	s = buf;
	if (len >= 2 && s[0] == '<' && s[len - 1] == '>') {
		s[len - 1] = '\0';
		s++;
	}
	if (*s == '\0') {
		m->null = 1;
		return 0;
	}
	if (*s == '@') {		/* <@relay,@relay:user@domain> */
		m->routed = 1;
		if ((colon = strchr(s, ':')) == NULL)
			return -1;
		s = colon + 1;
	}
	if ((at = local_end(s)) == NULL) {
		m->badlocal = 1;	/* no domain at all */
		snprintf(m->full, sizeof(m->full), "%s", s);
		return 0;
	}
	m->badlocal = local_bad(s, at);
	*at = '\0';
	len = strlen(at + 1);
	if (len > 0 && at[len] == '.')
		at[len] = '\0';	/* one trailing dot; a second is bad */
	m->literal = at[1] == '[';
	m->baddomain = !m->literal && (!policy_valid_domain(at + 1) ||
	    (len > 1 && at[len - 1] == '.'));
	n = snprintf(m->full, sizeof(m->full), "%s@%s", s, at + 1);
	if (n < 0 || (size_t)n >= sizeof(m->full))
		return -1;
	m->domain = m->full + (at - s) + 1;
	return 0;
}

/* mailbox_protected - a plain mailbox in one of the protected domains */
static int
mailbox_protected(const struct policy *pol, const struct mailbox *m)
{
	if (m->null || m->badlocal || m->routed || m->literal ||
	    m->baddomain || m->domain == NULL)
		return 0;
	return policy_domain_by_name(pol, m->domain) != NULL;
}

/* pattern_match - a rule's "ADDR" or "@DOMAIN" against a mailbox */
static int
pattern_match(const char *pattern, const struct mailbox *m)
{
	if (m->null)
		return 0;
	if (pattern[0] != '@')
		return strcasecmp(pattern, m->full) == 0;
	if (m->domain == NULL || m->badlocal)
		return 0;
	return strcasecmp(pattern + 1, m->domain) == 0;
}

/* rule_match - every condition the rule has holds */
static int
rule_match(const struct policy_rule *r, const struct sockaddr *client,
    const struct mailbox *from, const struct mailbox *to, int protected,
    int authed)
{
	if (r->has_net && (client == NULL || !addr_net_match(&r->net, client)))
		return 0;
	if (r->auth != -1 && r->auth != (authed != 0))
		return 0;
	if (r->from_null && !from->null)
		return 0;
	if (r->from != NULL && !pattern_match(r->from, from))
		return 0;
	if (r->to_protected && !protected)
		return 0;
	if (r->to != NULL && !pattern_match(r->to, to))
		return 0;
	return 1;
}

/* verdict_text - the reply text of a rule without one of its own */
static const char *
verdict_text(enum policy_verdict v)
{
	switch (v) {
	case POLICY_REJECT:
		return MSG_REJECT;
	case POLICY_TEMPFAIL:
		return MSG_TEMPFAIL;
	default:
		return NULL;
	}
}

/*
 * rcpt_verdict - the first matching rule; without one, live (a live relay,
 * whose upstream decides) relays everything, else only protected
 * recipients are relayed
 */
static enum policy_verdict
rcpt_verdict(const struct policy *pol, const struct sockaddr *client,
    const char *sender, const char *rcpt, int authed, int live,
    const char **message)
{
	struct mailbox from, to;
	const struct policy_rule *r;
	const char *msg = NULL;
	enum policy_verdict v;
	size_t i;
	int prot;

	if (mailbox_parse(rcpt, &to) == -1 || to.null) {
		v = POLICY_REJECT;
		msg = MSG_SYNTAX;
		goto done;
	}
	if (mailbox_parse(sender, &from) == -1)
		memset(&from, 0, sizeof(from));	/* matches only "any" */
	prot = mailbox_protected(pol, &to);
	for (i = 0; i < pol->nrules; i++) {
		r = &pol->rules[i];
		if (!rule_match(r, client, &from, &to, prot, authed))
			continue;
		v = r->verdict;
		msg = r->message != NULL ? r->message : verdict_text(v);
		goto done;
	}
	v = prot || live ? POLICY_RELAY : POLICY_REJECT;
	msg = prot || live ? NULL : MSG_NORELAY;
 done:
	if (message != NULL)
		*message = msg;
	return v;
}

/*
 * policy_check_rcpt - may this recipient be accepted (the MTA path).  The
 * first matching rule wins; without one only protected recipients are
 * relayed.  *message (if asked for) gets the reply text without its code,
 * e.g. "5.7.1 ...", or NULL for relay and discard.
 */
enum policy_verdict
policy_check_rcpt(const struct policy *pol, const struct sockaddr *client,
    enum policy_dir dir, const char *sender, const char *rcpt, int authed,
    const char **message)
{
	(void)dir;
	return rcpt_verdict(pol, client, sender, rcpt, authed, 0, message);
}

/*
 * policy_check_rcpt_live - the same for a live relay: the rules apply,
 * but a recipient no rule matches is relayed, for the upstream (the
 * server the client chose) to decide.  Bad syntax is still refused.
 */
enum policy_verdict
policy_check_rcpt_live(const struct policy *pol, const struct sockaddr *client,
    const char *sender, const char *rcpt, int authed, const char **message)
{
	return rcpt_verdict(pol, client, sender, rcpt, authed, 1, message);
}

/*
 * policy_verify_rcpt - the protected domain whose server is asked about
 * this recipient before it is accepted (verify-recipients), or NULL.
 * Only incoming sessions verify: their server is the original destination.
 */
const struct policy_domain *
policy_verify_rcpt(const struct policy *pol, enum policy_dir dir,
    const char *rcpt)
{
	const struct policy_domain *d;
	struct mailbox m;

	if (dir != POLICY_DIR_IN || mailbox_parse(rcpt, &m) == -1 ||
	    m.null || m.domain == NULL || m.literal || m.baddomain)
		return NULL;
	d = policy_domain_by_name(pol, m.domain);
	return d != NULL && d->verify_recipients ? d : NULL;
}

/* policy_hide_box_outgoing - 1: the live relay connects from the client */
int
policy_hide_box_outgoing(const struct policy *pol, const char *port)
{
	const struct policy_port *pp;

	if ((pp = policy_port_by_name(pol, port)) != NULL && pp->hide_box != -1)
		return pp->hide_box;
	return pol->hide_box_out;
}

/*
 * policy_conn_admit - may a client with open connections open one more.
 * connections-per-client caps the open ones; connection-rate N per W is a
 * bucket of N connections refilled at N per W (kept by the caller in rt,
 * changed only for an admitted connection).  0 and *why set if not.
 */
int
policy_conn_admit(const struct policy *pol, unsigned open,
    struct policy_rate *rt, uint64_t now, const char **why)
{
	const struct policy_limits *l = &pol->limits;
	uint64_t w = (uint64_t)l->conn_rate_window * 1000, full, el;

	if (l->conn_per_client != 0 && open >= l->conn_per_client) {
		*why = "connections-per-client";
		return 0;
	}
	if (l->conn_rate == 0 || w == 0)
		return 1;
	full = (uint64_t)l->conn_rate * w;
	if (!rt->used || now < rt->stamp)
		rt->credit = full;
	else {
		el = now - rt->stamp;
		rt->credit += (el > w ? w : el) * l->conn_rate;
	}
	if (rt->credit > full)
		rt->credit = full;
	rt->used = 1;
	rt->stamp = now;
	if (rt->credit < w) {
		*why = "connection-rate";
		return 0;
	}
	rt->credit -= w;
	return 1;
}

/* policy_rcpt_protected - rcpt (as received) is incoming mail */
int
policy_rcpt_protected(const struct policy *pol, const char *rcpt)
{
	struct mailbox m;

	if (mailbox_parse(rcpt, &m) == -1)
		return 0;
	return mailbox_protected(pol, &m);
}

/* tls_name_match - name is entry's (exact), or below it for ".domain"
 * (the names of "tls-policy" and "destination") */
static int
tls_name_match(const char *entry, const char *name)
{
	size_t el, nl;

	if (entry[0] != '.')
		return strcasecmp(entry, name) == 0;
	el = strlen(entry);
	nl = strlen(name);
	return nl > el && strcasecmp(name + nl - el, entry) == 0;
}

/*
 * policy_tls_lookup - the "tls-policy" entry for a next hop: the one of
 * its host name (host may be NULL), else the one of its destination
 * domain (may be NULL), the exact name before a ".parent" one, else the
 * default when one was written; NULL when none applies (the route's own
 * tls setting does).
 */
const struct policy_tlspol *
policy_tls_lookup(const struct policy *pol, const char *domain,
    const char *host)
{
	const struct policy_tlspol *best = NULL;
	size_t i;
	int pass;

	for (pass = 0; pass < 2 && best == NULL; pass++) {
		const char *name = pass == 0 ? host : domain;

		if (name == NULL || name[0] == '\0')
			continue;
		for (i = 0; i < pol->ntlspol; i++) {
			const struct policy_tlspol *t = &pol->tlspol[i];

			if (t->host != (pass == 0) ||
			    !tls_name_match(t->name, name))
				continue;
			/* the exact name wins over a parent's */
			if (best == NULL || (best->name[0] == '.' &&
			    t->name[0] != '.'))
				best = t;
		}
	}
	if (best == NULL && pol->tlsdef_set)
		best = &pol->tlsdef;
	return best;
}

/*
 * policy_dest_limits - the shaping of destination name (an MX domain,
 * a protected domain, a relay host; NULL: none): its "destination"
 * block (the exact name before a ".parent" one), each field it does not
 * set taken from "queue"
 */
void
policy_dest_limits(const struct policy *pol, const char *name,
    struct policy_shape *out)
{
	const struct policy_shape *best = NULL;
	size_t i;

	for (i = 0; name != NULL && i < pol->nshapes; i++) {
		if (!tls_name_match(pol->shapes[i].name, name))
			continue;
		if (best == NULL || (best->name[0] == '.' &&
		    pol->shapes[i].name[0] != '.'))
			best = &pol->shapes[i];
	}
	memset(out, 0, sizeof(*out));
	if (best != NULL)
		*out = *best;
	if (out->concurrency == 0)
		out->concurrency = pol->queue.concurrency;
	if (out->msgs_per_conn == 0)
		out->msgs_per_conn = pol->queue.msgs_per_conn;
	if (out->rcpts_per_msg == 0)
		out->rcpts_per_msg = pol->queue.rcpts_per_msg;
	if (!out->rate.set)
		out->rate = pol->queue.rate;
}

/*
 * policy_milters - the milters of a session of direction dir that came
 * in on bridge port port ("" or NULL: none known): the port's own
 * "milters" line, else the direction's, else NULL (no milter)
 */
const struct policy_milterset *
policy_milters(const struct policy *pol, enum policy_dir dir,
    const char *port)
{
	const struct policy_milterset *any = NULL;
	size_t i;

	for (i = 0; i < pol->nmiltersets; i++) {
		const struct policy_milterset *m = &pol->miltersets[i];

		if (m->dir != dir)
			continue;
		if (m->port[0] == '\0')
			any = m;
		else if (port != NULL && strcmp(m->port, port) == 0)
			return m->n > 0 ? m : NULL;
	}
	return any != NULL && any->n > 0 ? any : NULL;
}
