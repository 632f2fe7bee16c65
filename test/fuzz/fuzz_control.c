/*
 * fuzz_control.c - the control socket's request reader and parser
 * (daemon/control.c) with the commands the library registers ("stats",
 * and mta/admin.c's "queue ..."), over a real unix socket on a private
 * path: each input is written by a client that then shuts its side, and
 * the loop runs until the daemon's side answers and closes.
 *
 * Invariants: every request gets an answer that starts "OK\n" or
 * "ERR\n" (or none at all if the client sent no complete line), within a
 * bounded number of loop turns (a request never stalls the loop).
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "../../daemon/control.h"
#include "../../mta/mta_local.h"
#include "fuzz.h"

#define CTL_INPUT_MAX	4096
#define CTL_TURNS	100000

static struct sockaddr_un sun;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_policy("hostname gw.example.com\n");
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/control.sock",
	    fuzz_tmpdir());
	if (control_start(uv_default_loop(), sun.sun_path, -1) == -1)
		abort();
	mta_admin_register();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char ans[65536];
	size_t got = 0, off = 0, body;
	ssize_t n;
	int fd, turns, eof = 0;

	if (size > CTL_INPUT_MAX)
		return 0;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		perror("fuzz_control: connect");
		abort();
	}
	for (turns = 0; !eof; turns++) {
		if (turns == CTL_TURNS) {
			dprintf(fuzz_errfd, "fuzz_control: no answer after %d loop "
			    "turns\n", turns);
			abort();
		}
		if (off < size) {
			n = send(fd, data + off, size - off, MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
			else if (n == -1 && errno != EAGAIN)
				off = size;	/* answered early: fine */
			if (off == size)
				shutdown(fd, SHUT_WR);
		} else if (off == 0 && turns == 0)
			shutdown(fd, SHUT_WR);
		uv_run(uv_default_loop(), UV_RUN_NOWAIT);
		while ((n = read(fd, ans + got, sizeof(ans) - got)) > 0)
			if ((got += (size_t)n) == sizeof(ans))
				abort();
		if (n == 0 || (n == -1 && errno != EAGAIN))
			eof = 1;
	}
	close(fd);
	/* the daemon's answer must be one mxbridgectl accepts */
	if (got > 0 && control_answer_parse(ans, got, &body) == -1) {
		dprintf(fuzz_errfd, "fuzz_control: answer is neither OK nor ERR: "
		    "%.*s\n", (int)got, ans);
		abort();
	}
	return 0;
}
