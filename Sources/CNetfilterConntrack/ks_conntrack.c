#define _GNU_SOURCE
#include "ks_conntrack.h"
#include "ks_batch.h"

#include <errno.h>
#include <fcntl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

/// Moves the calling thread into the namespace at `path` (NULL: stays). `*self` receives a
/// descriptor of the thread's own namespace for `leave_netns`. 0, or -1 with errno.
static int enter_netns(const char *path, int *self) {
    *self = -1;
    if (path == NULL) return 0;
    *self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (*self < 0) return -1;
    int target = open(path, O_RDONLY | O_CLOEXEC);
    if (target < 0 || setns(target, CLONE_NEWNET) != 0) {
        int e = errno;
        if (target >= 0) close(target);
        close(*self);
        *self = -1;
        errno = e;
        return -1;
    }
    close(target);
    return 0;
}

/// Returns the thread to its own namespace; sockets opened meanwhile stay where they were made.
/// A thread that cannot go back must not run anything else, so that is fatal.
static void leave_netns(int self) {
    if (self < 0) return;
    int e = errno;
    if (setns(self, CLONE_NEWNET) != 0) abort();
    close(self);
    errno = e;
}

#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif
#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

struct nfct_handle *ks_ct_open(const char *netns_path, unsigned groups) {
    int self;
    if (enter_netns(netns_path, &self) != 0) return NULL;
    struct nfct_handle *h = nfct_open(CONNTRACK, groups);
    leave_netns(self);
    return h;
}

struct nfct_handle *ks_ct_open_writer(const char *netns_path) {
    struct nfct_handle *h = ks_ct_open(netns_path, 0);
    if (h != NULL) {
        // Error acks carry only the header (not a copy of the request), and there is room for
        // a whole chunk's worth of them.
        int one = 1, room = 4 << 20;
        setsockopt(nfct_fd(h), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
        if (setsockopt(nfct_fd(h), SOL_SOCKET, SO_RCVBUFFORCE, &room, sizeof room) != 0)
            setsockopt(nfct_fd(h), SOL_SOCKET, SO_RCVBUF, &room, sizeof room);
    }
    return h;
}

void ks_ct_close(struct nfct_handle *h) { nfct_close(h); }

int ks_ct_enable_events(const char *netns_path) {
    int self;
    if (enter_netns(netns_path, &self) != 0) return -1;
    // /proc/sys/net resolves to the namespace of the thread that opens it.
    int fd = open("/proc/sys/net/netfilter/nf_conntrack_events", O_RDWR | O_CLOEXEC);
    leave_netns(self);
    if (fd < 0) return -1;
    int e;
    char old[8] = {0};
    ssize_t n = read(fd, old, sizeof old - 1);
    int previous = n > 0 ? old[0] - '0' : -1;
    int result = previous;
    if (previous != 1) {
        if (pwrite(fd, "1\n", 2, 0) != 2) result = -1;
    }
    e = errno;
    close(fd);
    errno = e;
    return result;
}
int ks_ct_fd(struct nfct_handle *h) { return nfct_fd(h); }

int ks_ct_set_receive_buffer(struct nfct_handle *h, int bytes) {
    int fd = nfct_fd(h);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) == 0) return 0;
    return setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

int ks_ct_set_event_groups(struct nfct_handle *h, int creations_and_updates) {
    int fd = nfct_fd(h);
    int opt = creations_and_updates ? NETLINK_ADD_MEMBERSHIP : NETLINK_DROP_MEMBERSHIP;
    unsigned groups[] = { NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE };
    for (int i = 0; i < 2; i++) {
        if (setsockopt(fd, SOL_NETLINK, opt, &groups[i], sizeof groups[i]) != 0) return -1;
    }
    return 0;
}

int ks_ct_set_nonblocking(struct nfct_handle *h) {
    int fd = nfct_fd(h);
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void flatten(const struct nf_conntrack *ct, ks_ct *out, uint8_t event) {
    memset(out, 0, sizeof *out);
    uint8_t l3 = nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO);
    out->family = l3 == AF_INET6 ? 6 : 4;
    out->proto = nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO);
    out->event = event;
    if (out->family == 4) {
        uint32_t a;
        a = nfct_get_attr_u32(ct, ATTR_ORIG_IPV4_SRC); memcpy(out->orig_src, &a, 4);
        a = nfct_get_attr_u32(ct, ATTR_ORIG_IPV4_DST); memcpy(out->orig_dst, &a, 4);
        a = nfct_get_attr_u32(ct, ATTR_REPL_IPV4_SRC); memcpy(out->repl_src, &a, 4);
        a = nfct_get_attr_u32(ct, ATTR_REPL_IPV4_DST); memcpy(out->repl_dst, &a, 4);
    } else {
        const void *p;
        if ((p = nfct_get_attr(ct, ATTR_ORIG_IPV6_SRC))) memcpy(out->orig_src, p, 16);
        if ((p = nfct_get_attr(ct, ATTR_ORIG_IPV6_DST))) memcpy(out->orig_dst, p, 16);
        if ((p = nfct_get_attr(ct, ATTR_REPL_IPV6_SRC))) memcpy(out->repl_src, p, 16);
        if ((p = nfct_get_attr(ct, ATTR_REPL_IPV6_DST))) memcpy(out->repl_dst, p, 16);
    }
    if (out->proto == IPPROTO_ICMP || out->proto == IPPROTO_ICMPV6) {
        out->orig_sport = ntohs(nfct_get_attr_u16(ct, ATTR_ICMP_ID));
        out->orig_dport = (uint16_t)(nfct_get_attr_u8(ct, ATTR_ICMP_TYPE) << 8 | nfct_get_attr_u8(ct, ATTR_ICMP_CODE));
        out->repl_sport = out->orig_sport;
        // The kernel keys the reply by the reply type (echo reply for an echo request).
        uint8_t type = nfct_get_attr_u8(ct, ATTR_ICMP_TYPE);
        uint8_t rtype = out->proto == IPPROTO_ICMP ? (type == 8 ? 0 : type == 13 ? 14 : type == 15 ? 16 : type == 17 ? 18 : type)
                                                   : (type == 128 ? 129 : type);
        out->repl_dport = (uint16_t)(rtype << 8 | nfct_get_attr_u8(ct, ATTR_ICMP_CODE));
    } else {
        out->orig_sport = ntohs(nfct_get_attr_u16(ct, ATTR_ORIG_PORT_SRC));
        out->orig_dport = ntohs(nfct_get_attr_u16(ct, ATTR_ORIG_PORT_DST));
        out->repl_sport = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC));
        out->repl_dport = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_DST));
    }
    if (out->proto == IPPROTO_TCP) {
        out->tcp_state = nfct_get_attr_u8(ct, ATTR_TCP_STATE);
        if (nfct_attr_is_set(ct, ATTR_TCP_FLAGS_ORIG) > 0) out->tcp_flags_orig = nfct_get_attr_u8(ct, ATTR_TCP_FLAGS_ORIG);
        if (nfct_attr_is_set(ct, ATTR_TCP_FLAGS_REPL) > 0) out->tcp_flags_repl = nfct_get_attr_u8(ct, ATTR_TCP_FLAGS_REPL);
    }
    out->status = nfct_get_attr_u32(ct, ATTR_STATUS);
    out->timeout = nfct_get_attr_u32(ct, ATTR_TIMEOUT);
    out->mark = nfct_get_attr_u32(ct, ATTR_MARK);
    out->zone = nfct_get_attr_u16(ct, ATTR_ZONE);
}

static int collect(enum nf_conntrack_msg_type type, struct nf_conntrack *ct, void *data) {
    struct ks_batch *c = data;
    uint8_t event = type == NFCT_T_DESTROY ? KS_EVENT_DESTROY : type == NFCT_T_UPDATE ? KS_EVENT_UPDATE : KS_EVENT_NEW;
    flatten(ct, ks_batch_slot(c), event);
    ks_batch_added(c);
    return NFCT_CB_CONTINUE;
}

int ks_ct_dump(struct nfct_handle *h, uint8_t family, ks_ct_sink sink, void *context) {
    static _Atomic uint32_t next_seq = 0x40000000;
    return ks_ct_dump_fd(nfct_fd(h), family, next_seq++, sink, context);
}

int ks_ct_dump_library(struct nfct_handle *h, uint8_t family, ks_ct_sink sink, void *context) {
    struct ks_batch *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->sink = sink;
    c->context = context;
    nfct_callback_register(h, NFCT_T_ALL, collect, c);
    uint32_t fam = family == 4 ? AF_INET : family == 6 ? AF_INET6 : AF_UNSPEC;
    int r = nfct_query(h, NFCT_Q_DUMP, &fam);
    int e = errno;
    ks_batch_flush(c);
    nfct_callback_unregister(h);
    free(c);
    errno = e;
    return r;
}

int ks_ct_read_events(struct nfct_handle *h, ks_ct_sink sink, void *context) {
    return ks_ct_read_events_fd(nfct_fd(h), sink, context);
}

int ks_ct_read_events_library(struct nfct_handle *h, ks_ct_sink sink, void *context) {
    struct ks_batch *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->sink = sink;
    c->context = context;
    nfct_callback_register(h, NFCT_T_ALL, collect, c);
    int r = nfct_catch(h);   // returns -1 with EAGAIN once drained (non-blocking socket)
    int e = errno;
    ks_batch_flush(c);
    nfct_callback_unregister(h);
    int delivered = c->delivered;
    free(c);
    if (r == -1 && e != EAGAIN && e != EWOULDBLOCK && e != EINTR) {
        errno = e;
        return -1;
    }
    return delivered;
}

/// Window tracking that accepts any in-window-ish segment, both directions (the mask limits the
/// change to this one flag).
static void set_be_liberal(struct nf_conntrack *ct) {
    nfct_set_attr_u8(ct, ATTR_TCP_FLAGS_ORIG, IP_CT_TCP_FLAG_BE_LIBERAL);
    nfct_set_attr_u8(ct, ATTR_TCP_MASK_ORIG, IP_CT_TCP_FLAG_BE_LIBERAL);
    nfct_set_attr_u8(ct, ATTR_TCP_FLAGS_REPL, IP_CT_TCP_FLAG_BE_LIBERAL);
    nfct_set_attr_u8(ct, ATTR_TCP_MASK_REPL, IP_CT_TCP_FLAG_BE_LIBERAL);
}

static void build(struct nf_conntrack *ct, const ks_ct *in, int op, int be_liberal) {
    nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, in->family == 6 ? AF_INET6 : AF_INET);
    nfct_set_attr_u8(ct, ATTR_REPL_L3PROTO, in->family == 6 ? AF_INET6 : AF_INET);
    nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, in->proto);
    nfct_set_attr_u8(ct, ATTR_REPL_L4PROTO, in->proto);
    if (in->family == 4) {
        uint32_t a;
        memcpy(&a, in->orig_src, 4); nfct_set_attr_u32(ct, ATTR_ORIG_IPV4_SRC, a);
        memcpy(&a, in->orig_dst, 4); nfct_set_attr_u32(ct, ATTR_ORIG_IPV4_DST, a);
        memcpy(&a, in->repl_src, 4); nfct_set_attr_u32(ct, ATTR_REPL_IPV4_SRC, a);
        memcpy(&a, in->repl_dst, 4); nfct_set_attr_u32(ct, ATTR_REPL_IPV4_DST, a);
    } else {
        nfct_set_attr(ct, ATTR_ORIG_IPV6_SRC, in->orig_src);
        nfct_set_attr(ct, ATTR_ORIG_IPV6_DST, in->orig_dst);
        nfct_set_attr(ct, ATTR_REPL_IPV6_SRC, in->repl_src);
        nfct_set_attr(ct, ATTR_REPL_IPV6_DST, in->repl_dst);
    }
    if (in->proto == IPPROTO_ICMP || in->proto == IPPROTO_ICMPV6) {
        nfct_set_attr_u16(ct, ATTR_ICMP_ID, htons(in->orig_sport));
        nfct_set_attr_u8(ct, ATTR_ICMP_TYPE, (uint8_t)(in->orig_dport >> 8));
        nfct_set_attr_u8(ct, ATTR_ICMP_CODE, (uint8_t)(in->orig_dport & 0xFF));
    } else {
        nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, htons(in->orig_sport));
        nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, htons(in->orig_dport));
        nfct_set_attr_u16(ct, ATTR_REPL_PORT_SRC, htons(in->repl_sport));
        nfct_set_attr_u16(ct, ATTR_REPL_PORT_DST, htons(in->repl_dport));
    }
    if (in->zone) nfct_set_attr_u16(ct, ATTR_ZONE, in->zone);
    if (op == KS_OP_DELETE) return;
    if (op == KS_OP_TIMEOUT) {
        nfct_set_attr_u32(ct, ATTR_TIMEOUT, in->timeout);
        return;
    }
    if (op == KS_OP_UPDATE) {
        if (in->proto == IPPROTO_TCP) {
            nfct_set_attr_u8(ct, ATTR_TCP_STATE, in->tcp_state);
            if (be_liberal) set_be_liberal(ct);
        }
        nfct_set_attr_u32(ct, ATTR_TIMEOUT, in->timeout);
        nfct_set_attr_u32(ct, ATTR_MARK, in->mark);
        return;
    }
    // NAT: the reply tuple tells what was translated; ctnetlink wants it as NAT attributes,
    // with the reply tuple *before* translation (the inverse of the original, as conntrackd's
    // NFCT_SOPT_SETUP_REPLY does). The kernel's nf_nat_setup_info then computes the translated
    // reply tuple and sets IPS_SRC_NAT / IPS_DST_NAT. Given the translated reply tuple instead,
    // it finds nothing to translate, leaves those bits clear, and the entry forwards packets
    // without NAT (found by the failover drill: the survivor sent the clients' own addresses).
    int nat = 0;
    if (in->family == 4) {
        nat = memcmp(in->repl_dst, in->orig_src, 4) != 0 || memcmp(in->repl_src, in->orig_dst, 4) != 0;
    } else {
        nat = memcmp(in->repl_dst, in->orig_src, 16) != 0 || memcmp(in->repl_src, in->orig_dst, 16) != 0;
    }
    if (in->proto != IPPROTO_ICMP && in->proto != IPPROTO_ICMPV6) {
        nat = nat || in->repl_dport != in->orig_sport || in->repl_sport != in->orig_dport;
    }
    if (nat) {
        if (in->family == 4) {
            uint32_t a;
            memcpy(&a, in->orig_dst, 4); nfct_set_attr_u32(ct, ATTR_REPL_IPV4_SRC, a);
            memcpy(&a, in->orig_src, 4); nfct_set_attr_u32(ct, ATTR_REPL_IPV4_DST, a);
        } else {
            nfct_set_attr(ct, ATTR_REPL_IPV6_SRC, in->orig_dst);
            nfct_set_attr(ct, ATTR_REPL_IPV6_DST, in->orig_src);
        }
        if (in->proto != IPPROTO_ICMP && in->proto != IPPROTO_ICMPV6) {
            nfct_set_attr_u16(ct, ATTR_REPL_PORT_SRC, htons(in->orig_dport));
            nfct_set_attr_u16(ct, ATTR_REPL_PORT_DST, htons(in->orig_sport));
        }
    }
    if (in->family == 4) {
        if (memcmp(in->repl_dst, in->orig_src, 4) != 0 || in->repl_dport != in->orig_sport) {
            uint32_t a; memcpy(&a, in->repl_dst, 4);
            nfct_set_attr_u32(ct, ATTR_SNAT_IPV4, a);
            if (in->proto != IPPROTO_ICMP) nfct_set_attr_u16(ct, ATTR_SNAT_PORT, htons(in->repl_dport));
        }
        if (memcmp(in->repl_src, in->orig_dst, 4) != 0 || in->repl_sport != in->orig_dport) {
            uint32_t a; memcpy(&a, in->repl_src, 4);
            nfct_set_attr_u32(ct, ATTR_DNAT_IPV4, a);
            if (in->proto != IPPROTO_ICMP) nfct_set_attr_u16(ct, ATTR_DNAT_PORT, htons(in->repl_sport));
        }
    } else {
        if (memcmp(in->repl_dst, in->orig_src, 16) != 0 || in->repl_dport != in->orig_sport) {
            nfct_set_attr(ct, ATTR_SNAT_IPV6, in->repl_dst);
            if (in->proto != IPPROTO_ICMPV6) nfct_set_attr_u16(ct, ATTR_SNAT_PORT, htons(in->repl_dport));
        }
        if (memcmp(in->repl_src, in->orig_dst, 16) != 0 || in->repl_sport != in->orig_dport) {
            nfct_set_attr(ct, ATTR_DNAT_IPV6, in->repl_src);
            if (in->proto != IPPROTO_ICMPV6) nfct_set_attr_u16(ct, ATTR_DNAT_PORT, htons(in->repl_sport));
        }
    }
    if (in->proto == IPPROTO_TCP) {
        nfct_set_attr_u8(ct, ATTR_TCP_STATE, in->tcp_state);
        if (be_liberal) set_be_liberal(ct);
    }
    // Only the bits userspace may set; NAT bits follow from the NAT attributes, and an
    // injected conntrack is never EXPECTED (IPS_SEEN_REPLY | IPS_ASSURED | fixed timeout ok).
    nfct_set_attr_u32(ct, ATTR_STATUS, in->status & (IPS_SEEN_REPLY | IPS_ASSURED));
    nfct_set_attr_u32(ct, ATTR_TIMEOUT, in->timeout);
    if (in->mark) nfct_set_attr_u32(ct, ATTR_MARK, in->mark);
}

/// Reads pending netlink error messages without blocking; returns the count of rejections and
/// records each one's errno at its message's sequence number (the index in the batch).
/// `*lost` is set when the kernel dropped acks (ENOBUFS): some outcomes are then unknown.
static int drain_errors(int fd, int *errors, int count, int *lost) {
    char buf[16384];
    int rejected = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == ENOBUFS) {
            if (lost) *lost = 1;
            continue;
        }
        if (n <= 0) break;
        for (struct nlmsghdr *nlh = (struct nlmsghdr *)buf; NLMSG_OK(nlh, (unsigned)n); nlh = NLMSG_NEXT(nlh, n)) {
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *err = NLMSG_DATA(nlh);
                if (err->error != 0) {
                    uint32_t seq = err->msg.nlmsg_seq;
                    if (errors && seq < (uint32_t)count) errors[seq] = -err->error;
                    rejected++;
                }
            }
        }
    }
    return rejected;
}

/// The original tuple of `master` as the master tuple of `ct` (CTA_TUPLE_MASTER): the kernel
/// then links the new conntrack to that one and marks it IPS_EXPECTED.
static void set_master(struct nf_conntrack *ct, const ks_ct *master) {
    nfct_set_attr_u8(ct, ATTR_MASTER_L3PROTO, master->family == 6 ? AF_INET6 : AF_INET);
    nfct_set_attr_u8(ct, ATTR_MASTER_L4PROTO, master->proto);
    if (master->family == 4) {
        uint32_t a;
        memcpy(&a, master->orig_src, 4); nfct_set_attr_u32(ct, ATTR_MASTER_IPV4_SRC, a);
        memcpy(&a, master->orig_dst, 4); nfct_set_attr_u32(ct, ATTR_MASTER_IPV4_DST, a);
    } else {
        nfct_set_attr(ct, ATTR_MASTER_IPV6_SRC, master->orig_src);
        nfct_set_attr(ct, ATTR_MASTER_IPV6_DST, master->orig_dst);
    }
    nfct_set_attr_u16(ct, ATTR_MASTER_PORT_SRC, htons(master->orig_sport));
    nfct_set_attr_u16(ct, ATTR_MASTER_PORT_DST, htons(master->orig_dport));
}

static int write_batch(struct nfct_handle *h, const ks_ct *cts, int count, int op, int be_liberal, const ks_ct *master,
                       int *errors);

int ks_ct_write(struct nfct_handle *h, const ks_ct *cts, int count, int op, int be_liberal, int *errors) {
    return write_batch(h, cts, count, op, be_liberal, NULL, errors);
}

int ks_ct_create_related(struct nfct_handle *h, const ks_ct *ct, const ks_ct *master, int be_liberal, int *error) {
    return write_batch(h, ct, 1, KS_OP_CREATE, be_liberal, master, error);
}

static int write_batch(struct nfct_handle *h, const ks_ct *cts, int count, int op, int be_liberal, const ks_ct *master,
                       int *errors) {
    int fd = nfct_fd(h);
    size_t cap = 1 << 15;   // about 200 messages between drains
    char *buf = malloc(cap);
    if (!buf) { errno = ENOMEM; return -1; }
    int rejected = 0, lost = 0;
    size_t used = 0;
    if (errors) memset(errors, 0, sizeof(int) * (size_t)count);
    // Acks left from an earlier call belong to it, not to this batch.
    drain_errors(fd, NULL, 0, NULL);
    for (int i = 0; i <= count; i++) {
        // Send when the next message might not fit, and at the end.
        if (i == count || used + 1024 > cap) {
            if (used > 0) {
                struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
                ssize_t s = sendto(fd, buf, used, 0, (struct sockaddr *)&kernel, sizeof kernel);
                if (s < 0) { int e = errno; free(buf); errno = e; return -1; }
                rejected += drain_errors(fd, errors, count, &lost);
                used = 0;
            }
            if (i == count) break;
        }
        struct nf_conntrack *ct = nfct_new();
        if (!ct) { free(buf); errno = ENOMEM; return -1; }
        build(ct, &cts[i], op, be_liberal);
        if (master) set_master(ct, master);
        struct nlmsghdr *nlh = (struct nlmsghdr *)(buf + used);
        memset(nlh, 0, NLMSG_HDRLEN + sizeof(struct nfgenmsg));
        nlh->nlmsg_len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
        nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | (op == KS_OP_DELETE ? IPCTNL_MSG_CT_DELETE : IPCTNL_MSG_CT_NEW);
        nlh->nlmsg_flags = NLM_F_REQUEST | (op == KS_OP_CREATE ? NLM_F_CREATE | NLM_F_EXCL : 0);
        nlh->nlmsg_seq = (uint32_t)i;
        struct nfgenmsg *nfg = NLMSG_DATA(nlh);
        nfg->nfgen_family = cts[i].family == 6 ? AF_INET6 : AF_INET;
        nfg->version = NFNETLINK_V0;
        nfct_nlmsg_build(nlh, ct);
        nfct_destroy(ct);
        used += NLMSG_ALIGN(nlh->nlmsg_len);
    }
    free(buf);
    if (lost) {
        errno = ENOBUFS;
        return -1;
    }
    return rejected;
}

int ks_ct_get(struct nfct_handle *h, const ks_ct *keys, int count, uint32_t seq_base, ks_ct_sink sink, void *context,
              int *errors) {
    enum { CHUNK = 128 };
    int fd = nfct_fd(h);
    struct ks_batch *c = calloc(1, sizeof *c);
    char *out = malloc(CHUNK * 256);
    char *in = malloc(1 << 16);
    if (!c || !out || !in) { free(c); free(out); free(in); errno = ENOMEM; return -1; }
    c->sink = sink;
    c->context = context;
    for (int i = 0; i < count; i++) errors[i] = ETIMEDOUT;
    // Answers left from an earlier call that gave up waiting are not ours.
    while (recv(fd, in, 1 << 16, MSG_DONTWAIT) > 0) {}
    int found = 0, failed = 0, e = 0, gaveUp = 0;
    // One deadline for the whole call (1 s): a kernel that stops answering costs the caller at
    // most that, not a second per chunk; keys not asked or not answered stay ETIMEDOUT.
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 1;
    for (int start = 0; start < count && !failed && !gaveUp; start += CHUNK) {
        int n = count - start < CHUNK ? count - start : CHUNK;
        size_t used = 0;
        for (int i = start; i < start + n; i++) {
            struct nf_conntrack *ct = nfct_new();
            if (!ct) { failed = 1; e = ENOMEM; break; }
            build(ct, &keys[i], KS_OP_DELETE, 0);   // the tuple and zone only
            struct nlmsghdr *nlh = (struct nlmsghdr *)(out + used);
            memset(nlh, 0, NLMSG_HDRLEN + sizeof(struct nfgenmsg));
            nlh->nlmsg_len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
            nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
            nlh->nlmsg_flags = NLM_F_REQUEST;
            nlh->nlmsg_seq = seq_base + (uint32_t)i;
            struct nfgenmsg *nfg = NLMSG_DATA(nlh);
            nfg->nfgen_family = keys[i].family == 6 ? AF_INET6 : AF_INET;
            nfg->version = NFNETLINK_V0;
            nfct_nlmsg_build(nlh, ct);
            nfct_destroy(ct);
            used += NLMSG_ALIGN(nlh->nlmsg_len);
        }
        if (failed) break;
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        if (sendto(fd, out, used, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) { failed = 1; e = errno; break; }
        int answered = 0;
        while (answered < n) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long left = (long)(deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
            if (left <= 0) { gaveUp = 1; break; }   // the rest stay ETIMEDOUT
            struct pollfd p = { .fd = fd, .events = POLLIN };
            int r = poll(&p, 1, (int)left);
            if (r == 0) { gaveUp = 1; break; }
            if (r < 0) { if (errno == EINTR) continue; failed = 1; e = errno; break; }
            ssize_t len = recv(fd, in, 1 << 16, MSG_DONTWAIT);
            if (len < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                if (errno == ENOBUFS) continue;   // answers were dropped: they time out
                failed = 1; e = errno; break;
            }
            for (struct nlmsghdr *nlh = (struct nlmsghdr *)in; NLMSG_OK(nlh, (unsigned)len); nlh = NLMSG_NEXT(nlh, len)) {
                uint32_t idx = nlh->nlmsg_seq - seq_base;
                if (idx < (uint32_t)start || idx >= (uint32_t)(start + n) || errors[idx] != ETIMEDOUT) continue;
                if (nlh->nlmsg_type == NLMSG_ERROR) {
                    struct nlmsgerr *err = NLMSG_DATA(nlh);
                    // No NLM_F_ACK is asked, so an error 0 (an ACK) is no answer about the key.
                    if (err->error == 0) continue;
                    errors[idx] = -err->error;
                    answered++;
                } else if ((nlh->nlmsg_type & 0xFF) == IPCTNL_MSG_CT_NEW) {
                    struct nf_conntrack *ct = nfct_new();
                    if (!ct) { failed = 1; e = ENOMEM; break; }
                    if (nfct_nlmsg_parse(nlh, ct) == 0) {
                        flatten(ct, ks_batch_slot(c), KS_EVENT_NEW);
                        ks_batch_added(c);
                        errors[idx] = 0;
                        found++;
                    } else {
                        errors[idx] = EBADMSG;
                    }
                    nfct_destroy(ct);
                    answered++;
                }
            }
            if (failed) break;
        }
    }
    ks_batch_flush(c);
    free(c);
    free(out);
    free(in);
    if (failed) { errno = e; return -1; }
    return found;
}
