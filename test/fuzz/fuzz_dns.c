/*
 * fuzz_dns.c - libFuzzer target for the DNS answers the MTA reads: the
 * parser alone (mta_dns_parse_answer) for MX, A and AAAA, and a whole
 * next-hop resolution (mta_dns_mx_lookup: MX, CNAMEs, exchangers, null
 * MX, address cap) with the network replaced by the input.
 *
 * Input: byte 0 picks the mode.  Modes 0-2: the rest is one answer to
 * "example.org" MX/A/AAAA, its first two bytes the id asked.  Mode 3:
 * the rest is answers, each a 2-byte length then that many bytes, handed
 * out one per question (the question's id written over theirs, so they
 * get past the id check); questions past the last get no answer.
 * Mode 7 (byte 0 % 8 == 7, taken from mode 3): the rest is one answer
 * to "_25._tcp.mx.example.org" TLSA (mta_dns_parse_tlsa), its first two
 * bytes the id, the records kept checked against the limits.
 * Links with the whole of libmxb.a (make fuzzers).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../mta/mta_local.h"
#include "fuzz.h"

struct feed {
	const uint8_t	*p;
	size_t		 left;
};

/* next_answer - the transport: the next answer of the input */
static int
next_answer(void *arg, const uint8_t *q, size_t qlen, int tcp, unsigned ms,
    uint8_t **out, size_t *outlen)
{
	struct feed *f = arg;
	size_t n;

	(void)tcp;
	(void)ms;
	if (f->left < 2)
		return -1;
	n = (size_t)f->p[0] << 8 | f->p[1];
	f->p += 2;
	f->left -= 2;
	if (n > f->left)
		n = f->left;
	*out = malloc(n > 0 ? n : 1);
	if (*out == NULL)
		return -1;
	memcpy(*out, f->p, n);
	if (n >= 2 && qlen >= 2)
		memcpy(*out, q, 2);
	*outlen = n;
	f->p += n;
	f->left -= n;
	return 0;
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t types[] = { 15, 1, 28 };
	struct mta_dnsans ans;
	struct mta_dnsres res;
	struct feed f;
	uint16_t id;
	size_t i;

	if (size < 1)
		return 0;
	if (data[0] % 8 == 7) {
		static struct mta_tlsa t;

		id = size >= 3 ? (uint16_t)(data[1] << 8 | data[2]) : 0;
		if (mta_dns_parse_tlsa(data + 1, size - 1, id,
		    "_25._tcp.mx.example.org", &ans, &t) != 0)
			return 0;
		/* what DANE relies on: the limits, usable records only */
		if (t.n > MTA_TLSA_MAX || t.used > MTA_TLSA_MAXDATA ||
		    t.n + t.unusable + t.skipped != t.total)
			abort();
		for (i = 0; i < t.n; i++)
			if ((t.rr[i].usage != 2 && t.rr[i].usage != 3) ||
			    t.rr[i].selector > 1 || t.rr[i].mtype > 2 ||
			    t.rr[i].len == 0 ||
			    (size_t)t.rr[i].off + t.rr[i].len > t.used ||
			    (t.rr[i].mtype == 1 && t.rr[i].len != 32) ||
			    (t.rr[i].mtype == 2 && t.rr[i].len != 64))
				abort();
		return 0;
	}
	if (data[0] % 4 < 3) {
		id = size >= 3 ? (uint16_t)(data[1] << 8 | data[2]) : 0;
		if (mta_dns_parse_answer(data + 1, size - 1, id, "example.org",
		    types[data[0] % 4], &ans) == 0) {
			/* what the resolver relies on */
			if (ans.n > MTA_DNS_MAXRR)
				abort();
			for (i = 0; i < ans.n; i++)
				if (strlen(ans.rr[i].name) > 253 ||
				    (types[data[0] % 4] != 15 &&
				    ans.rr[i].family == 0))
					abort();
		}
		return 0;
	}
	f.p = data + 1;
	f.left = size - 1;
	mta_dns_set_transport(next_answer, &f);
	if (mta_dns_mx_lookup("example.org", 25, &res) == 0) {
		if (res.nhop < 1 || res.nhop > 5)
			abort();
	} else if (res.status != 4 && res.status != 5)
		abort();
	mta_dns_set_transport(NULL, NULL);
	return 0;
}
