/* testutil.h - helpers shared by the unit tests */
#ifndef MXB_TESTUTIL_H
#define MXB_TESTUTIL_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * srcdir - the repository root: $MXB_SRCDIR, or derived from where this
 * header was compiled from, so a test finds the man pages and examples
 * whatever directory it runs in.
 */
static inline const char *
srcdir(void)
{
	static char dir[1024];
	const char *env = getenv("MXB_SRCDIR"), *f = __FILE__, *end;

	if (env != NULL)
		return env;
	end = strstr(f, "test/unit/testutil.h");
	if (end == NULL || end == f)
		return ".";
	snprintf(dir, sizeof(dir), "%.*s", (int)(end - f - 1), f);
	return dir;
}

#endif
