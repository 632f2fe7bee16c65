/*
 * spool.c - the durable queue on disk.  It owns the spool directory
 * (tmp/, queue/, free/, corrupt/, dead/), every file operation on it,
 * and the crash recovery at start.
 *
 * Operations are queued and run in batches on the libuv threadpool, one
 * batch at a time: while a batch is on disk, new operations pile up and
 * the next batch takes them all.  A batch writes every new file (each
 * fdatasync'd), then renames them into queue/ and moves out what is
 * done, then fsyncs queue/ once.  So commits arriving while a batch is
 * running share one directory fsync: group commit across sessions.  The
 * callbacks run in submission order once the batch is durable; if any
 * fsync or rename of the batch fails, every message of the batch fails.
 *
 * A message file is queue/ID: the envelope header (envelope.c) and the
 * body.  Recipient states change in queue/ID.st, rewritten atomically,
 * and only after an attempt that left something pending.
 *
 * Files are recycled: a message that is done is renamed to free/N rather
 * than unlinked, and a new message is written over a free/N file and
 * renamed to queue/ID.  Creating and freeing an inode per message is the
 * dearest part of a commit on ext4 (the inode allocator scans past
 * recently deleted inodes, by far the most of the CPU at a few thousand
 * messages a minute); overwriting a file of the same size allocates
 * nothing.  Done messages are moved without a directory fsync: after a
 * crash such a message may be delivered again, never lost.
 */
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/hash.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

#define SPOOL_MAXBATCH	512
#define SPOOL_READ	(64 * 1024)
#define SPOOL_POOLMAX	256		/* free/ files kept for reuse */
#define SPOOL_POOLFILE	(128 * 1024)	/* bigger files are unlinked */

enum spool_optype { OP_COMMIT, OP_STATE, OP_REMOVE, OP_MOVE, OP_EXPIRE };

struct spool_op {
	TAILQ_ENTRY(spool_op) entry;
	enum spool_optype type;
	char		 id[MTA_IDLEN + 1];
	unsigned	 seq;		/* STATE: unique temp name */
	long		 slot;		/* COMMIT, REMOVE: free/N, or -1 */
	unsigned	 gen;		/* REMOVE: spool_gen when given a slot */
	int		 stfile;	/* REMOVE: queue/ID.st exists */
	uint64_t	 size;		/* REMOVE: of the message file */
	struct mta_env	*env;		/* COMMIT: owned until the callback */
	struct mta_dsnreq *dsn;		/* COMMIT of a DSN: composed here */
	struct buf	 data;		/* COMMIT: body; STATE: the file */
	int		 spillfd;	/* COMMIT: body beyond data, or -1 */
	int64_t		 spillskip;	/* COMMIT: bytes of the spill file
					   that data replaces (an edited
					   header), -1: none, data first */
	char		*spillpath;
	const char	*subdir;	/* MOVE */
	unsigned	 age;		/* EXPIRE: seconds */
	int		 fd;		/* worker: written, not yet synced */
	char		*tmppath;	/* worker: the file before its rename */
	int		 status;	/* 0 or -1 */
	char		 err[PATH_MAX + 128];
	mta_spool_cb	 cb;
	void		*arg;
};
TAILQ_HEAD(spool_opq, spool_op);

struct spool_batch {
	uv_work_t	 req;
	struct spool_opq ops;
	int		 fsync;
	unsigned	 n;
	char		 fail[PATH_MAX + 128];	/* why every commit fails */
	uint64_t	 queued;	/* uv_hrtime() at submission */
	uint64_t	 started;	/* ... when a thread took it */
	uint64_t	 done;
};

static uv_loop_t	*spool_loop;
static char		*spool_root;
static struct spool_opq	 spool_pending = TAILQ_HEAD_INITIALIZER(spool_pending);
static unsigned		 spool_npending;
static int		 spool_inflight;
static unsigned		 spool_seq;
static uint64_t		 spool_batches;
static uint64_t		 spool_ops;
/* shared: every worker asks at MAIL FROM (mta_can_accept), atomic */
static _Atomic time_t	 spool_free_checked;
static atomic_int	 spool_free_state = 1;
static long		*spool_pool;	/* free/N ready for reuse */
static size_t		 spool_npool;
static size_t		 spool_nreturning;	/* renamed to free/ in flight */
static long		 spool_poolseq;	/* the next new N */
static unsigned		 spool_gen;	/* mta_spool_init()s so far */

const char *
mta_spool_dir(void)
{
	return spool_root;
}

/* mta_spool_path - "ROOT/SUB/NAME" into out; -1 if it does not fit */
int
mta_spool_path(char *out, size_t len, const char *sub, const char *name)
{
	int n;

	n = snprintf(out, len, "%s/%s%s%s", spool_root, sub,
	    name != NULL ? "/" : "", name != NULL ? name : "");
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* clean_tmp - unlink what a previous run left half written */
static void
clean_tmp(void)
{
	char path[PATH_MAX], name[PATH_MAX];
	struct dirent *de;
	DIR *d;

	if (mta_spool_path(path, sizeof(path), "tmp", NULL) == -1 ||
	    (d = opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (snprintf(name, sizeof(name), "%s/%s", path, de->d_name) <
		    (int)sizeof(name) && unlink(name) == 0)
			log_debug("spool: removed leftover tmp/%s", de->d_name);
	}
	closedir(d);
}

/*
 * spool_dir_safe - path is a directory of the daemon's own user that no
 * one else may write to (not a symbolic link, no group or other write):
 * queue files are read back and delivered, so someone else who could
 * write here could make the box send mail.  Logs the reason.
 */
static int
spool_dir_safe(const char *path)
{
	struct stat st;

	if (lstat(path, &st) == -1) {
		log_warn("spool: %s", path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_warnx("spool: %s is not a directory%s: refusing it", path,
		    S_ISLNK(st.st_mode) ? " (a symbolic link)" : "");
		return -1;
	}
	if (st.st_uid != geteuid()) {
		log_warnx("spool: %s belongs to uid %ld, not to the daemon's "
		    "uid %ld: refusing it (chown it)", path, (long)st.st_uid,
		    (long)geteuid());
		return -1;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		log_warnx("spool: %s is writable by %s (mode %04o): refusing "
		    "it (chmod 0700 it)", path, st.st_mode & S_IWOTH ?
		    "others" : "its group", (unsigned)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

int
mta_spool_init(uv_loop_t *loop, const char *root)
{
	static const char *const subs[] = { "tmp", "queue", "free",
	    "corrupt", "dead", NULL };
	char path[PATH_MAX];
	size_t i;

	spool_loop = loop;
	free(spool_root);
	spool_root = xstrdup(root);
	/* a batch of the last start may still end: its slots are stale */
	spool_gen++;
	spool_npool = 0;
	spool_nreturning = 0;
	spool_poolseq = 0;
	if (mkdir(root, 0700) == -1 && errno != EEXIST) {
		log_warn("spool: mkdir %s", root);
		return -1;
	}
	if (spool_dir_safe(root) == -1)
		return -1;
	for (i = 0; subs[i] != NULL; i++) {
		if (mta_spool_path(path, sizeof(path), subs[i], NULL) == -1 ||
		    (mkdir(path, 0700) == -1 && errno != EEXIST)) {
			log_warn("spool: mkdir %s", path);
			return -1;
		}
		if (spool_dir_safe(path) == -1)
			return -1;
	}
	clean_tmp();
	return 0;
}

unsigned
mta_spool_busy(void)
{
	return spool_npending + (spool_inflight ? 1 : 0);
}

/* one fsync or fdatasync of the spool (seconds): 100 us on a fast SSD's
 * cache up to seconds on a busy disk */
static const uint64_t fsync_bounds[] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
	500000, 1000000, 2500000, 5000000,
};
static struct histogram	 spool_fsync_hist = HISTOGRAM_INIT(fsync_bounds);

const struct histogram *
mta_spool_fsync_hist(void)
{
	return &spool_fsync_hist;
}

/* the messages committed by each batch that commits one: how many
 * sessions' messages share one fsync (group commit at work) */
static const uint64_t batch_bounds[] = {
	1, 2, 4, 8, 16, 32, 64, 128, 256, SPOOL_MAXBATCH,
};
static struct histogram	 spool_batch_hist = HISTOGRAM_COUNTS(batch_bounds);

const struct histogram *
mta_spool_batch_hist(void)
{
	return &spool_batch_hist;
}

/* timed_sync - fsync (dir) or fdatasync fd, its time observed: on the pool */
static int
timed_sync(int fd, int dir)
{
	uint64_t t = uv_hrtime();
	int rc;

	rc = dir ? fsync(fd) : fdatasync(fd);
	histogram_observe(&spool_fsync_hist, (uv_hrtime() - t) / 1000);
	return rc;
}

/* mta_spool_counts - batches run and operations done, for stats */
void
mta_spool_counts(uint64_t *batches, uint64_t *ops)
{
	*batches = spool_batches;
	*ops = spool_ops;
}

/*
 * Worker side: runs on the threadpool, touches nothing but the batch.
 */

static void	xunlink(const char *, const char *);

static int
op_fail(struct spool_op *op, const char *what, const char *path)
{
	op->status = -1;
	snprintf(op->err, sizeof(op->err), "%s %s: %s", what, path,
	    strerror(errno));
	return -1;
}

/*
 * batch_failed - an fsync or rename of the batch failed: the device or
 * the file system is in trouble, so no commit of the batch is trusted;
 * every one fails with the first reason
 */
static void
batch_failed(struct spool_batch *b, const char *what, const char *path)
{
	if (b->fail[0] == '\0')
		snprintf(b->fail, sizeof(b->fail), "%s %s: %s", what, path,
		    strerror(errno));
}

static int
write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		if ((w = write(fd, p, n)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* write_head - header and body in one pwritev at the start of the file */
static int
write_head(int fd, const struct buf *hdr, const struct buf *data)
{
	struct iovec iov[2];
	size_t want = hdr->len + data->len, done = 0, k;
	ssize_t w;

	while (done < want) {
		k = 0;
		if (done < hdr->len) {
			iov[k].iov_base = hdr->data + done;
			iov[k++].iov_len = hdr->len - done;
		}
		if (data->len > 0) {
			iov[k].iov_base = data->data + (done > hdr->len ?
			    done - hdr->len : 0);
			iov[k].iov_len = data->len - (done > hdr->len ?
			    done - hdr->len : 0);
			k++;
		}
		if ((w = pwritev(fd, iov, (int)k, (off_t)done)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		done += (size_t)w;
	}
	return 0;
}

/* copy_spill - the part of a body that went to a spill file, from skip */
static int
copy_spill(int from, int to, off_t skip)
{
	char chunk[SPOOL_READ];
	ssize_t n;

	if (lseek(from, skip, SEEK_SET) == -1)
		return -1;
	while ((n = read(from, chunk, sizeof(chunk))) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (write_all(to, chunk, (size_t)n) == -1)
			return -1;
	}
	return 0;
}

/*
 * write_file - a whole file: header, data, spill, written over whatever
 * path held (a recycled file keeps its blocks: no O_TRUNC, a shorter
 * content is cut at its end).  With dosync the file stays open for
 * sync_batch(), which flushes every file of the batch at once.
 */
static int
write_file(struct spool_op *op, const char *path, const struct buf *hdr,
    int dosync)
{
	struct stat st;
	off_t len = (off_t)(hdr->len + op->data.len);
	int fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) == -1)
		return op_fail(op, "open", path);
	if (fstat(fd, &st) == -1 || write_head(fd, hdr, &op->data) == -1 ||
	    (op->spillfd != -1 && (lseek(fd, len, SEEK_SET) == -1 ||
	    copy_spill(op->spillfd, fd, op->spillskip > 0 ?
	    (off_t)op->spillskip : 0) == -1 ||
	    (len = lseek(fd, 0, SEEK_CUR)) == -1)) ||
	    (st.st_size > len && ftruncate(fd, len) == -1)) {
		op_fail(op, "write", path);
		close(fd);
		unlink(path);
		return -1;
	}
	op->tmppath = xstrdup(path);
	if (!dosync) {
		close(fd);
		return 0;
	}
	op->fd = fd;
	return 0;
}

/*
 * sync_batch - make every file written by the batch durable: start the
 * writeback of all of them, then wait for each.
 */
static void
sync_batch(struct spool_batch *b)
{
	struct spool_op *op;

	TAILQ_FOREACH(op, &b->ops, entry)
		if (op->fd != -1)
			sync_file_range(op->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	TAILQ_FOREACH(op, &b->ops, entry) {
		if (op->fd == -1)
			continue;
		if (timed_sync(op->fd, 0) == -1) {
			op_fail(op, "fsync", op->tmppath);
			batch_failed(b, "fsync", op->tmppath);
		}
		close(op->fd);
		op->fd = -1;
	}
}

/*
 * spill_resum - a header edited after the body went to its spill file:
 * the new header (data) and the file past the old one make the body;
 * its length and checksum are counted again here, on the threadpool
 */
static int
spill_resum(struct spool_op *op)
{
	char chunk[SPOOL_READ];
	uint64_t sum, len;
	off_t off = (off_t)op->spillskip;
	ssize_t n;

	sum = hash_fnv(HASH_FNV_INIT, op->data.data, op->data.len);
	len = op->data.len;
	for (;;) {
		if ((n = pread(op->spillfd, chunk, sizeof(chunk), off)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		sum = hash_fnv(sum, chunk, (size_t)n);
		len += (uint64_t)n;
		off += n;
	}
	op->env->bodylen = len;
	op->env->bodysum = sum;
	return 0;
}

/* work_commit - phase 1 of a new message: free/N written, durable */
static void
work_commit(struct spool_op *op, int dosync)
{
	char path[PATH_MAX], name[32];
	struct buf hdr;

	buf_init(&hdr);
	if (op->dsn != NULL) {
		if (mta_dsn_compose(op->dsn, &op->data) == -1) {
			op->status = -1;
			snprintf(op->err, sizeof(op->err), "cannot read the "
			    "original message");
			/* the slot is not used: its file goes with it */
			snprintf(name, sizeof(name), "%ld", op->slot);
			xunlink("free", name);
			return;
		}
		op->env->bodylen = op->data.len;
		op->env->bodysum = hash_fnv(HASH_FNV_INIT, op->data.data,
		    op->data.len);
	}
	if (op->spillskip >= 0 && op->spillfd != -1 && spill_resum(op) == -1) {
		op_fail(op, "read", op->spillpath);
		snprintf(name, sizeof(name), "%ld", op->slot);
		xunlink("free", name);
		return;
	}
	mta_env_serialize(op->env, &hdr);
	op->env->bodyoff = hdr.len;
	snprintf(name, sizeof(name), "%ld", op->slot);
	if (mta_spool_path(path, sizeof(path), "free", name) == 0)
		write_file(op, path, &hdr, dosync);
	buf_free(&hdr);
}

/* work_state - phase 1 of a state update: tmp/ID.st.SEQ */
static void
work_state(struct spool_op *op, int dosync)
{
	char path[PATH_MAX], name[64];
	struct buf none;

	buf_init(&none);
	snprintf(name, sizeof(name), "%s.st.%u", op->id, op->seq);
	if (mta_spool_path(path, sizeof(path), "tmp", name) == 0)
		write_file(op, path, &none, dosync);
}

static int
xrename(struct spool_op *op, const char *fsub, const char *fname,
    const char *tsub, const char *tname)
{
	char from[PATH_MAX], to[PATH_MAX];

	if (mta_spool_path(from, sizeof(from), fsub, fname) == -1 ||
	    mta_spool_path(to, sizeof(to), tsub, tname) == -1)
		return -1;
	if (rename(from, to) == -1)
		return op_fail(op, "rename", from);
	return 0;
}

static void
xunlink(const char *sub, const char *name)
{
	char path[PATH_MAX];

	if (mta_spool_path(path, sizeof(path), sub, name) == 0 &&
	    unlink(path) == -1 && errno != ENOENT)
		log_warn("spool: unlink %s", path);
}

/* work_expire - unlink dead/ files older than op->age */
static void
work_expire(struct spool_op *op)
{
	char path[PATH_MAX], name[PATH_MAX];
	struct dirent *de;
	struct stat st;
	time_t now = mta_now();
	DIR *d;

	if (mta_spool_path(path, sizeof(path), "dead", NULL) == -1 ||
	    (d = opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' ||
		    snprintf(name, sizeof(name), "%s/%s", path, de->d_name) >=
		    (int)sizeof(name) || stat(name, &st) == -1)
			continue;
		if (now - st.st_mtime >= (time_t)op->age && unlink(name) == 0)
			log_info("msgid=%.16s spool: dead message expired",
			    de->d_name);
	}
	closedir(d);
}

/*
 * work_remove - a message is done: its state file goes, the message
 * file to free/N for reuse (or away).  No fsync: a crash brings it back.
 */
static void
work_remove(struct spool_op *op)
{
	char name[64], from[PATH_MAX], to[PATH_MAX];

	if (op->stfile) {
		snprintf(name, sizeof(name), "%s.st", op->id);
		xunlink("queue", name);
	}
	snprintf(name, sizeof(name), "%ld", op->slot);
	if (op->slot != -1 && (mta_spool_path(from, sizeof(from), "queue",
	    op->id) == -1 || mta_spool_path(to, sizeof(to), "free", name) ==
	    -1 || rename(from, to) == -1))
		op->slot = -1;		/* not recycled: op_done knows */
	if (op->slot == -1)
		xunlink("queue", op->id);
}

/*
 * publish - a written file (fsub/fname) into queue/ as qname, which
 * fails the batch if it cannot be; a file whose writing failed goes.
 * 1 when queue/ changed.
 */
static int
publish(struct spool_batch *b, struct spool_op *op, const char *fsub,
    const char *fname, const char *qname)
{
	if (op->status == 0 && xrename(op, fsub, fname, "queue", qname) == -1)
		batch_failed(b, "rename", op->tmppath);
	if (op->status == -1 && op->tmppath != NULL)
		unlink(op->tmppath);
	return op->status == 0;
}

/* work_phase2 - make one op visible: rename into place or away */
static int
work_phase2(struct spool_batch *b, struct spool_op *op)
{
	char name[64], dname[PATH_MAX];

	switch (op->type) {
	case OP_COMMIT:
		snprintf(name, sizeof(name), "%ld", op->slot);
		return publish(b, op, "free", name, op->id);
	case OP_STATE:
		snprintf(name, sizeof(name), "%s.st.%u", op->id, op->seq);
		snprintf(dname, sizeof(dname), "%s.st", op->id);
		return publish(b, op, "tmp", name, dname);
	case OP_REMOVE:
		work_remove(op);
		return 0;
	case OP_MOVE:
		snprintf(name, sizeof(name), "%s.st", op->id);
		if (xrename(op, "queue", op->id, op->subdir, op->id) == 0 &&
		    mta_spool_path(dname, sizeof(dname), "queue", name) == 0 &&
		    access(dname, F_OK) == 0)
			xrename(op, "queue", name, op->subdir, name);
		return 1;
	case OP_EXPIRE:
		work_expire(op);
		return 0;
	}
	return 0;
}

static int
fsync_dir(struct spool_batch *b, const char *sub)
{
	char path[PATH_MAX];
	int fd, rc = 0;

	if (mta_spool_path(path, sizeof(path), sub, NULL) == -1)
		return -1;
	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		batch_failed(b, "open", path);
		return -1;
	}
	if (timed_sync(fd, 1) == -1) {
		batch_failed(b, "fsync", path);
		rc = -1;
	}
	close(fd);
	return rc;
}

/*
 * fail_commits - something the batch's commits depend on failed: none
 * of them is durable for sure, so none is acknowledged.  The files that
 * made it to queue/ go: the client sends the message again.
 */
static void
fail_commits(struct spool_batch *b)
{
	struct spool_op *op;

	TAILQ_FOREACH(op, &b->ops, entry) {
		if (op->type != OP_COMMIT || op->status != 0)
			continue;
		op->status = -1;
		snprintf(op->err, sizeof(op->err), "%s", b->fail);
		xunlink("queue", op->id);
	}
}

/* batch_work - the three phases of a batch, on the threadpool */
static void
batch_work(uv_work_t *req)
{
	struct spool_batch *b = req->data;
	struct spool_op *op;
	int changed = 0, moved = 0;

	b->started = uv_hrtime();
	TAILQ_FOREACH(op, &b->ops, entry) {
		if (op->type == OP_COMMIT)
			work_commit(op, b->fsync);
		else if (op->type == OP_STATE)
			work_state(op, b->fsync);
	}
	sync_batch(b);
	TAILQ_FOREACH(op, &b->ops, entry) {
		changed |= work_phase2(b, op);
		if (op->type == OP_MOVE && op->status == 0)
			moved = 1;
	}
	if (b->fsync && changed)
		fsync_dir(b, "queue");
	if (b->fsync && moved) {
		fsync_dir(b, "dead");
		fsync_dir(b, "corrupt");
	}
	if (b->fail[0] != '\0')
		fail_commits(b);
	b->done = uv_hrtime();
}

/*
 * Loop side
 */

static void	batch_start(void);

static void
op_free(struct spool_op *op)
{
	buf_free(&op->data);
	if (op->spillfd != -1)
		mta_spool_spill_drop(op->spillfd, op->spillpath);
	else
		free(op->spillpath);
	if (op->dsn != NULL)
		mta_dsn_free(op->dsn);
	free(op->tmppath);
	free(op);
}

/* pool_take - a free/N to write a new message into (maybe a new one) */
static long
pool_take(void)
{
	if (spool_npool > 0)
		return spool_pool[--spool_npool];
	return spool_poolseq++;
}

/* pool_give - a name for a done message's file, or -1: unlink it */
static long
pool_give(struct spool_op *op, uint64_t size)
{
	if (size > SPOOL_POOLFILE ||
	    spool_npool + spool_nreturning >= SPOOL_POOLMAX)
		return -1;
	spool_nreturning++;
	op->gen = spool_gen;
	return spool_poolseq++;
}

static void
pool_put(long slot)
{
	if (spool_pool == NULL)
		spool_pool = xcalloc(SPOOL_POOLMAX, sizeof(*spool_pool));
	if (spool_npool < SPOOL_POOLMAX)
		spool_pool[spool_npool++] = slot;
}

/* op_done - report one op of a finished batch */
static void
op_done(struct spool_op *op, int status)
{
	struct mta_env *env;

	if (status != 0 && op->status == 0) {
		op->status = -1;
		snprintf(op->err, sizeof(op->err), "cancelled");
	}
	if (op->type == OP_REMOVE && op->gen == spool_gen && op->gen != 0) {
		spool_nreturning--;
		if (op->slot != -1)
			pool_put(op->slot);
	}
	if (op->status == -1)
		log_warnx("msgid=%s spool: %s", op->id, op->err);
	env = op->env;
	op->env = NULL;
	if (op->type == OP_COMMIT && op->status == 0 && op->spillfd == -1)
		mta_env_mem_take(env, &op->data);
	if (op->cb != NULL)
		op->cb(op->arg, op->status, op->status == 0 ? op->id :
		    op->err);
	else
		mta_env_free(env);
	op_free(op);
}

/* batch_done - back on the loop: report every op in order */
static void
batch_done(uv_work_t *req, int status)
{
	struct spool_batch *b = req->data;
	struct spool_op *op;

	spool_inflight = 0;
	log_debug("spool: batch ops=%u wait=%.1fms work=%.1fms", b->n,
	    (b->started - b->queued) / 1e6, (b->done - b->started) / 1e6);
	if (b->fail[0] != '\0')
		log_warnx("spool: batch of %u failed, no message of it is "
		    "queued: %s", b->n, b->fail);
	while ((op = TAILQ_FIRST(&b->ops)) != NULL) {
		TAILQ_REMOVE(&b->ops, op, entry);
		op_done(op, status);
	}
	free(b);
	batch_start();
}

/* batch_start - hand everything pending to the threadpool, if idle */
static void
batch_start(void)
{
	struct spool_batch *b;
	struct spool_op *op;
	struct policy *p = policy_current();
	unsigned commits = 0;
	int rc;

	if (spool_inflight || TAILQ_EMPTY(&spool_pending))
		return;
	b = xcalloc(1, sizeof(*b));
	TAILQ_INIT(&b->ops);
	b->fsync = p != NULL ? p->queue.fsync : 1;
	while (b->n < SPOOL_MAXBATCH &&
	    (op = TAILQ_FIRST(&spool_pending)) != NULL) {
		TAILQ_REMOVE(&spool_pending, op, entry);
		TAILQ_INSERT_TAIL(&b->ops, op, entry);
		spool_npending--;
		b->n++;
		if (op->type == OP_COMMIT) {
			op->slot = pool_take();
			commits++;
		} else if (op->type == OP_REMOVE)
			op->slot = pool_give(op, op->size);
	}
	b->req.data = b;
	b->queued = uv_hrtime();
	spool_inflight = 1;
	spool_batches++;
	spool_ops += b->n;
	if (commits > 0)
		histogram_observe(&spool_batch_hist, commits);
	if ((rc = uv_queue_work(spool_loop, &b->req, batch_work,
	    batch_done)) != 0) {
		log_warnx("spool: uv_queue_work: %s", uv_strerror(rc));
		batch_work(&b->req);
		batch_done(&b->req, 0);
	}
}

static struct spool_op *
op_new(enum spool_optype type, const char *id)
{
	struct spool_op *op;

	op = xcalloc(1, sizeof(*op));
	op->type = type;
	op->spillfd = -1;
	op->spillskip = -1;
	op->fd = -1;
	op->slot = -1;
	if (id != NULL)
		snprintf(op->id, sizeof(op->id), "%s", id);
	buf_init(&op->data);
	return op;
}

static void
op_submit(struct spool_op *op)
{
	TAILQ_INSERT_TAIL(&spool_pending, op, entry);
	spool_npending++;
	batch_start();
}

/*
 * mta_spool_commit - queue a new message: env (taken over), the body in
 * memory (taken over, body reset) and maybe a spill file holding the
 * rest.  cb(arg, 0, id) once durable, the env still valid in the call
 * only if the callee keeps it: the callback owns env on success through
 * mta_queue_add; on failure the spool frees it.
 */
void
mta_spool_commit(struct mta_env *env, struct buf *body, int spillfd,
    const char *spillpath, int64_t spillskip, mta_spool_cb cb, void *arg)
{
	struct spool_op *op;

	op = op_new(OP_COMMIT, env->id);
	op->env = env;
	op->data = *body;
	buf_init(body);
	op->spillfd = spillfd;
	op->spillskip = spillskip;
	op->spillpath = spillpath != NULL ? xstrdup(spillpath) : NULL;
	op->cb = cb;
	op->arg = arg;
	op_submit(op);
}

/* mta_spool_dsn - queue a DSN whose body is composed on the threadpool */
void
mta_spool_dsn(struct mta_env *env, struct mta_dsnreq *req, mta_spool_cb cb,
    void *arg)
{
	struct spool_op *op;

	op = op_new(OP_COMMIT, env->id);
	op->env = env;
	op->dsn = req;
	op->cb = cb;
	op->arg = arg;
	op_submit(op);
}

/* mta_spool_state - write env's recipient states (serialized now) */
void
mta_spool_state(struct mta_env *env)
{
	struct spool_op *op;

	env->stfile = 1;
	op = op_new(OP_STATE, env->id);
	op->seq = ++spool_seq;
	mta_state_serialize(env, &op->data);
	op_submit(op);
}

/* mta_spool_remove - env is done: its files leave queue/ */
void
mta_spool_remove(const struct mta_env *env)
{
	struct spool_op *op;

	op = op_new(OP_REMOVE, env->id);
	op->stfile = env->stfile;
	op->size = env->bodyoff + env->bodylen;
	op_submit(op);
}

/* mta_spool_move - queue/ID (and its state) to dead/ or corrupt/ */
void
mta_spool_move(const char *id, const char *subdir)
{
	struct spool_op *op;

	op = op_new(OP_MOVE, id);
	op->subdir = subdir;
	op_submit(op);
}

void
mta_spool_expire_dead(unsigned age)
{
	struct spool_op *op;

	op = op_new(OP_EXPIRE, NULL);
	op->age = age;
	op_submit(op);
}

/*
 * mta_spool_free_ok - is there more than min_free on the spool's file
 * system?  Checked at most once a second.
 */
int
mta_spool_free_ok(uint64_t min_free)
{
	struct statvfs sv;
	time_t now = mta_now(), last;
	int ok;

	if (spool_root == NULL)
		return 0;
	/* one thread a second looks; the others take its answer */
	last = atomic_load_explicit(&spool_free_checked, memory_order_relaxed);
	if (now == last || !atomic_compare_exchange_strong(&spool_free_checked,
	    &last, now))
		return atomic_load_explicit(&spool_free_state,
		    memory_order_relaxed);
	if (statvfs(spool_root, &sv) == -1) {
		log_warn("spool: statvfs %s", spool_root);
		ok = 0;
	} else {
		ok = (uint64_t)sv.f_bavail * sv.f_frsize > min_free;
		if (!ok)
			log_warnx("spool: free space below min-free=%llu, "
			    "refusing mail", (unsigned long long)min_free);
	}
	atomic_store_explicit(&spool_free_state, ok, memory_order_relaxed);
	return ok;
}

void
mta_spool_spill_drop(int fd, char *path)
{
	if (fd != -1)
		close(fd);
	if (path != NULL) {
		unlink(path);
		free(path);
	}
}

/*
 * mta_spool_read_headers - our Received: and the message's header
 * section, at most max bytes, for "queue show" and RET=HDRS.  Reads the
 * file directly: for the admin path only.
 */
int
mta_spool_read_headers(const struct mta_env *env, struct buf *out,
    size_t max)
{
	char path[PATH_MAX], *chunk, *end;
	ssize_t n;
	int fd;

	if (mta_spool_path(path, sizeof(path), "queue", env->id) == -1 ||
	    (fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	chunk = xmalloc(max + 1);
	n = pread(fd, chunk, max, (off_t)env->bodyoff);
	close(fd);
	if (n < 0) {
		free(chunk);
		return -1;
	}
	chunk[n] = '\0';
	if (env->received != NULL)
		buf_puts(out, env->received);
	if ((end = strstr(chunk, "\r\n\r\n")) != NULL)
		n = end - chunk + 2;
	buf_append(out, chunk, (size_t)n);
	free(chunk);
	return 0;
}

/*
 * Loading at start
 */

/* read_whole - a file into memory */
static int
read_whole(const char *path, struct buf *b, struct stat *st)
{
	ssize_t n;
	int fd, rc = -1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(fd, st) == -1)
		goto done;
	buf_reserve(b, (size_t)st->st_size + 1);
	while ((n = read(fd, b->data + b->len, b->cap - b->len - 1)) > 0)
		b->len += (size_t)n;
	if (n == 0)
		rc = 0;
done:
	close(fd);
	return rc;
}

/* quarantine - a message file that must never be delivered */
static void
quarantine(const char *name, const char *why)
{
	char from[PATH_MAX], to[PATH_MAX], st[64];

	mta_stats.corrupt++;
	log_warnx("msgid=%.16s spool: corrupt message file moved to "
	    "corrupt/: %s", name, why);
	if (mta_spool_path(from, sizeof(from), "queue", name) == -1 ||
	    mta_spool_path(to, sizeof(to), "corrupt", name) == -1)
		return;
	if (rename(from, to) == -1)
		log_warn("spool: rename %s", from);
	snprintf(st, sizeof(st), "%.16s.st", name);
	if (mta_spool_path(from, sizeof(from), "queue", st) == 0 &&
	    mta_spool_path(to, sizeof(to), "corrupt", st) == 0)
		rename(from, to);
}

/* load_state - apply queue/ID.st if there is one */
static void
load_state(struct mta_env *env)
{
	char path[PATH_MAX], name[64];
	struct buf b;
	struct stat st;

	snprintf(name, sizeof(name), "%s.st", env->id);
	if (mta_spool_path(path, sizeof(path), "queue", name) == -1)
		return;
	buf_init(&b);
	if (read_whole(path, &b, &st) == 0) {
		env->stfile = 1;
		if (mta_state_parse(b.data, b.len, env) == -1) {
			log_warnx("msgid=%s spool: state file unusable, using "
			    "the message file's states", env->id);
			unlink(path);
			env->stfile = 0;
		}
	}
	buf_free(&b);
}

/* load_one - queue/NAME into a checked envelope, or NULL */
static struct mta_env *
load_one(const char *name)
{
	char path[PATH_MAX];
	struct mta_env *env = NULL;
	struct buf b;
	struct stat st;
	const char *why = NULL;

	buf_init(&b);
	if (mta_spool_path(path, sizeof(path), "queue", name) == -1)
		goto done;
	if (read_whole(path, &b, &st) == -1) {
		log_warn("spool: read %s", path);
		goto done;
	}
	env = mta_env_new();
	if (mta_env_parse(b.data, b.len, env, &why) == -1)
		;
	else if (strcmp(env->id, name) != 0)
		why = "id does not match the file name";
	else if ((uint64_t)st.st_size != env->bodyoff + env->bodylen)
		why = "size does not match the header (truncated)";
	else if (hash_fnv(HASH_FNV_INIT, b.data + env->bodyoff,
	    env->bodylen) != env->bodysum)
		why = "body checksum mismatch";
	if (why != NULL) {
		quarantine(name, why);
		mta_env_free(env);
		env = NULL;
	} else
		load_state(env);
done:
	buf_free(&b);
	return env;
}

/* orphan_state - ID.st without its message: left from a removal */
static void
orphan_state(const char *dir, const char *name)
{
	char id[MTA_IDLEN + 1], path[PATH_MAX];
	struct stat st;

	if (strlen(name) != MTA_IDLEN + 3 || strcmp(name + MTA_IDLEN, ".st"))
		return;
	memcpy(id, name, MTA_IDLEN);
	id[MTA_IDLEN] = '\0';
	if (snprintf(path, sizeof(path), "%s/%s", dir, id) <
	    (int)sizeof(path) && stat(path, &st) == -1 && errno == ENOENT &&
	    snprintf(path, sizeof(path), "%s/%s", dir, name) <
	    (int)sizeof(path))
		unlink(path);
}

static int
ino_cmp(const void *a, const void *b)
{
	const ino_t *x = a, *y = b;

	return *x < *y ? -1 : *x > *y;
}

/*
 * pool_load - the free/ files of the last run become the pool.  One
 * whose inode is also a queue/ entry (a rename torn by a crash on a file
 * system without a journal) is left alone: reusing or unlinking it would
 * destroy a queued message.
 */
static void
pool_load(ino_t *inos, size_t ninos)
{
	char dir[PATH_MAX], path[PATH_MAX], *end;
	struct dirent *de;
	long n;
	DIR *d;

	if (mta_spool_path(dir, sizeof(dir), "free", NULL) == -1 ||
	    (d = opendir(dir)) == NULL)
		return;
	if (ninos > 0)
		qsort(inos, ninos, sizeof(*inos), ino_cmp);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		n = strtol(de->d_name, &end, 10);
		if (*end != '\0' || n < 0 || n == LONG_MAX)
			continue;
		if (n >= spool_poolseq)
			spool_poolseq = n + 1;
		if (ninos > 0 && bsearch(&de->d_ino, inos, ninos,
		    sizeof(*inos), ino_cmp) != NULL)
			log_warnx("spool: free/%s is also a queued message, "
			    "left alone", de->d_name);
		else if (spool_npool < SPOOL_POOLMAX)
			pool_put(n);
		else if (snprintf(path, sizeof(path), "%s/%s", dir,
		    de->d_name) < (int)sizeof(path))
			unlink(path);
	}
	closedir(d);
}

/* queue_inodes - the inodes of queue/'s entries, for pool_load() */
static ino_t *
queue_inodes(const char *dir, size_t *np)
{
	struct dirent *de;
	ino_t *inos = NULL;
	size_t cap = 0;
	DIR *d;

	*np = 0;
	if ((d = opendir(dir)) == NULL)
		return NULL;
	while ((de = readdir(d)) != NULL) {
		if (*np == cap) {
			cap = cap ? cap * 2 : 256;
			inos = xreallocarray(inos, cap, sizeof(*inos));
		}
		inos[(*np)++] = de->d_ino;
	}
	closedir(d);
	return inos;
}

/*
 * mta_spool_load - every message in queue/, checked, handed to add();
 * torn or corrupt files go to corrupt/.  Synchronous: runs at start,
 * before the daemon takes mail.  Returns the number loaded.
 */
int
mta_spool_load(void (*add)(struct mta_env *))
{
	char dir[PATH_MAX];
	struct dirent *de;
	struct mta_env *env;
	ino_t *inos;
	size_t ninos;
	DIR *d;
	int n = 0;

	if (mta_spool_path(dir, sizeof(dir), "queue", NULL) == -1 ||
	    (d = opendir(dir)) == NULL) {
		log_warn("spool: opendir %s", dir);
		return -1;
	}
	/* the pool first: loading may already remove messages into it */
	inos = queue_inodes(dir, &ninos);
	pool_load(inos, ninos);
	free(inos);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (!mta_id_valid(de->d_name)) {
			orphan_state(dir, de->d_name);
			continue;
		}
		if ((env = load_one(de->d_name)) != NULL) {
			add(env);
			n++;
		}
	}
	closedir(d);
	return n;
}
