/*
 * mxbridgectl.c - the control tool.  It finds the daemon's control socket
 * (from -s, or from the configuration file), sends one request line made
 * of its arguments, and prints the answer.  Exit status: 0 when the
 * daemon answered OK, 1 when it refused, 2 when it could not be reached
 * or its answer was not one (control_answer_parse, daemon/control.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../common/buf.h"
#include "../common/log.h"
#include "../daemon/control.h"
#include "../policy/policy.h"

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr,
	    "usage: mxbridgectl [-f file | -s socket] command [arg ...]\n"
	    "commands: status, stats, queue list|show ID|flush [ID]|"
	    "delete ID|bounce ID, reload\n");
	exit(2);
}

static int
ctl_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "mxbridgectl: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1) {
		fprintf(stderr, "mxbridgectl: socket: %s\n", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "mxbridgectl: %s: %s (is mxbridge running?)\n",
		    path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ctl_request - send argv as one line, collect the whole answer */
static int
ctl_request(int fd, int argc, char **argv, struct buf *ans)
{
	struct buf req;
	char chunk[4096];
	ssize_t n;
	int i, rc = -1;

	buf_init(&req);
	for (i = 0; i < argc; i++) {
		if (strpbrk(argv[i], "\r\n") != NULL)
			goto done;
		buf_printf(&req, "%s%s", i ? " " : "", argv[i]);
	}
	buf_puts(&req, "\n");
	if (write(fd, req.data, req.len) != (ssize_t)req.len)
		goto done;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		buf_append(ans, chunk, (size_t)n);
	rc = n == 0 ? 0 : -1;
done:
	buf_free(&req);
	return rc;
}

int
main(int argc, char *argv[])
{
	const char *conf = POLICY_DEFAULT_PATH, *sock = NULL;
	struct policy *p = NULL;
	struct buf ans;
	char err[512];
	size_t hdr, i;
	int ch, fd, rc;

	log_init("mxbridgectl", 1, 0);
	/* a daemon that closes before reading the request is an error
	 * message, not a silent death by SIGPIPE */
	signal(SIGPIPE, SIG_IGN);
	while ((ch = getopt(argc, argv, "f:s:")) != -1) {
		switch (ch) {
		case 'f': conf = optarg; break;
		case 's': sock = optarg; break;
		default: usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	if (sock == NULL) {
		if ((p = policy_load(conf, err, sizeof(err))) == NULL) {
			fprintf(stderr, "mxbridgectl: %s\n", err);
			return 2;
		}
		sock = p->control;
	}
	if ((fd = ctl_connect(sock)) == -1)
		return 2;
	buf_init(&ans);
	rc = ctl_request(fd, argc, argv, &ans);
	close(fd);
	if (rc == -1 || ans.len == 0) {
		fprintf(stderr, "mxbridgectl: no answer from the daemon\n");
		rc = 2;
		goto done;
	}
	if ((rc = control_answer_parse(ans.data, ans.len, &hdr)) == -1) {
		/* the start of it, printable, so the cause can be seen */
		fprintf(stderr, "mxbridgectl: malformed answer from the daemon "
		    "at %s: \"", sock);
		for (i = 0; i < ans.len && i < 64; i++) {
			if (ans.data[i] >= 0x20 && ans.data[i] < 0x7f)
				fputc(ans.data[i], stderr);
			else
				fprintf(stderr, "\\x%02x",
				    (unsigned char)ans.data[i]);
		}
		fprintf(stderr, "%s\"\n", ans.len > 64 ? "..." : "");
		rc = 2;
		goto done;
	}
	fwrite(ans.data + hdr, 1, ans.len - hdr, rc ? stderr : stdout);
done:
	buf_free(&ans);
	if (p != NULL)
		policy_unref(p);
	return rc;
}
