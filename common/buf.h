/* buf.h - growable byte buffer shared by every module */
#ifndef MXB_BUF_H
#define MXB_BUF_H
#include <stddef.h>

struct buf {
	char	*data;
	size_t	 len;		/* bytes in use */
	size_t	 cap;		/* bytes allocated */
	size_t	 off;		/* bytes already consumed from the front */
};

void	 buf_init(struct buf *);
void	 buf_free(struct buf *);
void	 buf_reserve(struct buf *, size_t);
void	 buf_append(struct buf *, const void *, size_t);
void	 buf_puts(struct buf *, const char *);
void	 buf_printf(struct buf *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
void	 buf_consume(struct buf *, size_t);
void	 buf_reset(struct buf *);
/* bytes not yet consumed */
static inline const char *buf_head(const struct buf *b) { return b->data + b->off; }
static inline size_t buf_avail(const struct buf *b) { return b->len - b->off; }

#endif
