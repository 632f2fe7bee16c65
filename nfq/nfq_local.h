/*
 * nfq_local.h - what nfq.c and kernel.c share inside the module: the nft
 * netlink query, the divert record, and the in-kernel classifier's hooks
 * (all on the daemon's thread).
 */
#ifndef MXB_NFQ_LOCAL_H
#define MXB_NFQ_LOCAL_H
#include <stddef.h>
#include <stdint.h>

#include <libmnl/libmnl.h>
#include <uv.h>

/*
 * one nf_tables request of type msg (flags added to NLM_F_REQUEST|ACK)
 * for family, its attributes put by req, each answer given to cb; 0, or
 * -1 on error (ENOENT: errno, nothing found)
 */
int	nfq_nft_query(uint16_t msg, uint16_t flags, uint8_t family,
	    void (*req)(struct nlmsghdr *), mnl_cb_t cb, void *arg);

/* where KEY's value starts in the record ("KEY=" opening a word; it runs
 * to the next space), NULL if the record has none */
const char *nfq_record_value(const char *rec, const char *key);

/* the divert record's text: 1, 0 when the script is not up, -1 error */
int	nfq_record_read_text(char *text, size_t len);

int	nfq_kernel_start(uv_loop_t *);
void	nfq_kernel_reload(void);
void	nfq_kernel_shutdown(void);
/* the kernel's decisions added into dec, the passed flows of those kept
 * on the bridge from their SYN on in *bridged; 1 if its table is loaded */
int	nfq_kernel_counts(uint64_t dec[2][3], uint64_t *bridged);

#endif
