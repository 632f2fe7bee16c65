/*
 * fuzz.h - what the libFuzzer targets of test/fuzz share: the entry
 * points' prototypes, a cursor that cuts an input into fields, a private
 * temporary folder removed at exit, and a small policy made current, for
 * the code that asks policy_current().  Header-only: each target is one
 * .c file linked with the library objects (see the Makefile).
 */
#ifndef MXB_FUZZ_H
#define MXB_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/xmalloc.h"
#include "../../policy/policy.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

/* an input being cut into fields */
struct fuzz_in {
	const uint8_t	*p;
	size_t		 n;
};

/* fuzz_byte - the next octet, 0 once the input is used up */
static inline unsigned
fuzz_byte(struct fuzz_in *in)
{
	unsigned c;

	if (in->n == 0)
		return 0;
	c = in->p[0];
	in->p++;
	in->n--;
	return c;
}

/*
 * fuzz_field - the bytes up to the next NUL (or the end) as a new C
 * string of at most max octets; NUL is the field separator
 */
static inline char *
fuzz_field(struct fuzz_in *in, size_t max)
{
	const uint8_t *z = memchr(in->p, '\0', in->n);
	size_t len = z != NULL ? (size_t)(z - in->p) : in->n;
	char *s = xstrndup((const char *)in->p, len > max ? max : len);

	in->p += len;
	in->n -= len;
	if (in->n > 0) {	/* the separator */
		in->p++;
		in->n--;
	}
	return s;
}

/*
 * Where a target says why it aborts: stderr as it was at start.  The run
 * scripts pass -close_fd_mask=2 to silence the daemon code's own
 * warnings; libFuzzer and the sanitizers keep a copy of stderr for their
 * reports, and this is ours, taken before main().
 */
static int	fuzz_errfd = 2;

__attribute__((constructor)) static void
fuzz_keep_stderr(void)
{
	int fd = dup(2);

	if (fd != -1)
		fuzz_errfd = fd;
}

static char	fuzz_tmp[96];

static void
fuzz_tmp_remove(void)
{
	char cmd[128];

	if (fuzz_tmp[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fuzz_tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz: could not remove %s\n", fuzz_tmp);
}

/* fuzz_tmpdir - a private folder for this process, removed at exit */
static inline const char *
fuzz_tmpdir(void)
{
	const char *t = getenv("TMPDIR");

	if (fuzz_tmp[0] != '\0')
		return fuzz_tmp;
	/* short enough for a unix socket's name inside it */
	if (t == NULL || *t == '\0' || strlen(t) > 60)
		t = "/tmp";
	snprintf(fuzz_tmp, sizeof(fuzz_tmp), "%s/mxb-fuzz.XXXXXX", t);
	if (mkdtemp(fuzz_tmp) == NULL) {
		perror("fuzz: mkdtemp");
		abort();
	}
	atexit(fuzz_tmp_remove);
	return fuzz_tmp;
}

/* fuzz_write - a file of n bytes at path; aborts on failure */
static inline void
fuzz_write(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL || (n > 0 && fwrite(p, 1, n, fp) != n) ||
	    fclose(fp) != 0) {
		perror(path);
		abort();
	}
}

/*
 * fuzz_policy - make a policy from conf text current (numeric addresses
 * only: nothing is looked up); aborts if it does not load
 */
static inline void
fuzz_policy(const char *conf)
{
	char path[128], err[512];
	struct policy *pol;

	snprintf(path, sizeof(path), "%s/policy.conf", fuzz_tmpdir());
	fuzz_write(path, conf, strlen(conf));
	if ((pol = policy_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "fuzz: policy: %s\n", err);
		abort();
	}
	policy_set_current(pol);
}

#endif
