/*
 * fuzz_spool.c - the spool's readers (mta/spool.c's start-up load and
 * envelope.c's parsers of message and state files) on torn, truncated and
 * hostile files.  Each input becomes queue/ID and, if the input says so,
 * queue/ID.st in a private spool, and mta_spool_load() reads them as the
 * daemon does at start.
 *
 * Input: one octet of flags, two of the message file's length, then the
 * message file and the state file.  Flag bit 0: write the state file;
 * bit 1: make the message file's checksums and body length right (an
 * attacker who can write the spool can compute them; without this the
 * fuzzer would rarely get past the checksum); bit 2: the same for the
 * state file.
 *
 * Invariants: a message that loads has its file's id and at least one
 * recipient, and what loads serializes, parses back and serializes to
 * the same bytes (the queue rewrites what it loaded).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../common/buf.h"
#include "../../common/hash.h"
#include "../../mta/mta_local.h"
#include "fuzz.h"

#define ID	"0005f0e1d2c3b4a5"

static char	qpath[256], spath[256], cpath[256], cspath[256];
static int	loaded;

/* replace - the value after "key=" in b up to the next space or LF */
static void
replace(struct buf *b, const char *key, const char *val)
{
	struct buf o;
	char *k, *end;

	buf_reserve(b, 1);
	b->data[b->len] = '\0';
	if (memchr(b->data, '\0', b->len) != NULL ||
	    (k = strstr(b->data, key)) == NULL)
		return;
	k += strlen(key);
	end = k + strcspn(k, " \n");
	buf_init(&o);
	buf_append(&o, b->data, (size_t)(k - b->data));
	buf_puts(&o, val);
	buf_append(&o, end, b->len - (size_t)(end - b->data));
	buf_free(b);
	*b = o;
}

/*
 * fixup - p/n with the end line's sum recomputed and, for a message
 * file, bodylen and bodysum made those of what follows the end line
 */
static void
fixup(const uint8_t *p, size_t n, int msg, struct buf *out)
{
	const uint8_t *e = NULL, *nl;
	struct buf h;
	size_t i, blen;
	char v[32];

	for (i = 0; i + 9 <= n; i++)
		if ((i == 0 || p[i - 1] == '\n') &&
		    memcmp(p + i, "end sum=", 8) == 0) {
			e = p + i;
			break;
		}
	if (e == NULL || (nl = memchr(e, '\n', n - (size_t)(e - p))) == NULL) {
		buf_append(out, p, n);
		return;
	}
	buf_init(&h);
	buf_append(&h, p, (size_t)(e - p));
	blen = n - (size_t)(nl + 1 - p);
	if (msg) {
		snprintf(v, sizeof(v), "%zu", blen);
		replace(&h, " bodylen=", v);
		snprintf(v, sizeof(v), "%016llx", (unsigned long long)
		    hash_fnv(HASH_FNV_INIT, nl + 1, blen));
		replace(&h, " bodysum=", v);
	}
	buf_append(out, h.data, h.len);
	buf_printf(out, "end sum=%016llx\n", (unsigned long long)
	    hash_fnv(HASH_FNV_INIT, h.data, h.len));
	buf_append(out, nl + 1, blen);
	buf_free(&h);
}

static void
add(struct mta_env *env)
{
	struct mta_env *again;
	struct buf a, b;
	const char *why;

	loaded++;
	if (strcmp(env->id, ID) != 0 || env->nrcpt == 0)
		abort();
	buf_init(&a);
	buf_init(&b);
	mta_env_serialize(env, &a);
	again = mta_env_new();
	if (mta_env_parse(a.data, a.len, again, &why) == -1) {
		dprintf(fuzz_errfd, "fuzz_spool: loaded envelope does not parse "
		    "back: %s\n", why);
		abort();
	}
	mta_env_serialize(again, &b);
	if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) {
		dprintf(fuzz_errfd, "fuzz_spool: envelope changed on a round "
		    "trip:\n%.*s---\n%.*s", (int)a.len, a.data, (int)b.len,
		    b.data);
		abort();
	}
	buf_free(&a);
	buf_free(&b);
	mta_env_free(again);
	mta_env_free(env);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char root[200];

	snprintf(root, sizeof(root), "%s/spool", fuzz_tmpdir());
	if (mta_spool_init(uv_default_loop(), root) == -1)
		abort();
	mta_spool_path(qpath, sizeof(qpath), "queue", ID);
	mta_spool_path(spath, sizeof(spath), "queue", ID ".st");
	mta_spool_path(cpath, sizeof(cpath), "corrupt", ID);
	mta_spool_path(cspath, sizeof(cspath), "corrupt", ID ".st");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	unsigned flags = fuzz_byte(&in);
	size_t mlen = fuzz_byte(&in) << 8;
	struct buf b;

	mlen |= fuzz_byte(&in);
	if (mlen > in.n)
		mlen = in.n;
	buf_init(&b);
	if (flags & 2)
		fixup(in.p, mlen, 1, &b);
	else
		buf_append(&b, in.p, mlen);
	fuzz_write(qpath, b.data, b.len);
	buf_reset(&b);
	if (flags & 1) {
		if (flags & 4)
			fixup(in.p + mlen, in.n - mlen, 0, &b);
		else
			buf_append(&b, in.p + mlen, in.n - mlen);
		fuzz_write(spath, b.data, b.len);
	}
	buf_free(&b);
	loaded = 0;
	if (mta_spool_load(add) != loaded)
		abort();
	unlink(qpath);
	unlink(spath);
	unlink(cpath);
	unlink(cspath);
	return 0;
}
