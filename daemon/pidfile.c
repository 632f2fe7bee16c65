/*
 * pidfile.c - the daemon's pid file.  Whether an instance runs is decided
 * by a lock on the file, never by the pid written in it: a killed daemon
 * that its parent has not reaped yet, or an unrelated process that got
 * the same pid, still answers kill(pid, 0), and would block a restart.
 * The kernel drops the lock the moment the holder dies, however it dies.
 *
 * flock(2), not fcntl(2): the file is locked before the daemon forks into
 * the background (so that a refusal reaches the terminal and the exit
 * status), and a flock lock belongs to the open file description, which
 * the child inherits and keeps after the parent exits; fcntl record locks
 * belong to the process and are not inherited by fork().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pidfile.h"

/* holder - the pid written in the file, for the message; 0 if none */
static long
holder(int fd)
{
	char line[32];
	ssize_t n;

	if ((n = pread(fd, line, sizeof(line) - 1, 0)) <= 0)
		return 0;
	line[n] = '\0';
	return strtol(line, NULL, 10);
}

int
pidfile_lock(const char *path, char *err, size_t errlen)
{
	struct stat a, b;
	int fd = -1, tries;
	long pid;

	/*
	 * A holder that exits unlinks the file before its lock goes: a lock
	 * won on that unlinked file would be no lock at all, so take it
	 * again on the file the path names now.
	 */
	for (tries = 0; tries < 10; tries++) {
		if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) ==
		    -1) {
			snprintf(err, errlen, "pidfile %s: %s", path,
			    strerror(errno));
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
			if (errno == EWOULDBLOCK) {
				pid = holder(fd);
				snprintf(err, errlen, "already running: pid=%ld "
				    "pidfile=%s (another mxbridge holds its lock)",
				    pid, path);
			} else
				snprintf(err, errlen, "pidfile %s: lock: %s",
				    path, strerror(errno));
			goto fail;
		}
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return fd;
		close(fd);
		fd = -1;
	}
	snprintf(err, errlen, "pidfile %s: replaced while locking it", path);
fail:
	if (fd != -1)
		close(fd);
	return -1;
}

int
pidfile_write(int fd, pid_t pid)
{
	char line[32];
	int n;

	n = snprintf(line, sizeof(line), "%ld\n", (long)pid);
	if (ftruncate(fd, 0) == -1 || pwrite(fd, line, (size_t)n, 0) != n)
		return -1;
	return 0;
}

void
pidfile_release(int fd, const char *path)
{
	if (fd == -1)
		return;
	/* unlinked while still locked: see pidfile_lock */
	unlink(path);
	close(fd);
}
