// Reading conntracks straight from ctnetlink messages, for the two paths that carry every entry:
// kernel events (the master's live sync) and dumps (reconciliations, the re-arm after a
// takeover, restarts). libnetfilter_conntrack's reader (nfct_catch/nfct_query) allocates an
// object per message, parses every attribute into it and reads one datagram per system call;
// here a batch of datagrams comes with one recvmmsg and each message's attributes go straight
// into a ks_ct. The result is the same as `flatten` in ks_conntrack.c gives from the library's
// object (a test compares the two on real tables).
//
// Only kernel headers here: libnetfilter_conntrack's own copies of them clash with these, so
// this file does not include the library.
#define _GNU_SOURCE   // recvmmsg
#include "ks_conntrack.h"
#include "ks_batch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#define KS_NLA_TYPE(a) ((a)->nla_type & NLA_TYPE_MASK)
#define KS_NLA_DATA(a) ((const uint8_t *)(a) + NLA_HDRLEN)
#define KS_NLA_LEN(a) ((int)(a)->nla_len - NLA_HDRLEN)

/// Calls `fn` for each well-formed attribute in `len` bytes at `data`; stops at the first one
/// whose length does not fit.
static void walk(const void *data, int len, void (*fn)(const struct nlattr *, void *), void *ctx) {
    const uint8_t *p = data;
    while (len >= (int)NLA_HDRLEN) {
        const struct nlattr *a = (const struct nlattr *)p;
        if (a->nla_len < NLA_HDRLEN || a->nla_len > len) return;
        fn(a, ctx);
        int step = NLA_ALIGN(a->nla_len);
        if (step >= len) return;
        p += step;
        len -= step;
    }
}

static uint16_t be16(const struct nlattr *a) { uint16_t v; memcpy(&v, KS_NLA_DATA(a), 2); return ntohs(v); }
static uint32_t be32(const struct nlattr *a) { uint32_t v; memcpy(&v, KS_NLA_DATA(a), 4); return ntohl(v); }

struct tuple {
    uint8_t src[16], dst[16];
    uint16_t sport, dport, icmp_id;
    uint8_t proto, icmp_type, icmp_code;
};

static void tuple_ip(const struct nlattr *a, void *ctx) {
    struct tuple *t = ctx;
    int len = KS_NLA_LEN(a);
    switch (KS_NLA_TYPE(a)) {
    case CTA_IP_V4_SRC: if (len == 4) memcpy(t->src, KS_NLA_DATA(a), 4); break;
    case CTA_IP_V4_DST: if (len == 4) memcpy(t->dst, KS_NLA_DATA(a), 4); break;
    case CTA_IP_V6_SRC: if (len == 16) memcpy(t->src, KS_NLA_DATA(a), 16); break;
    case CTA_IP_V6_DST: if (len == 16) memcpy(t->dst, KS_NLA_DATA(a), 16); break;
    }
}

static void tuple_proto(const struct nlattr *a, void *ctx) {
    struct tuple *t = ctx;
    int len = KS_NLA_LEN(a);
    switch (KS_NLA_TYPE(a)) {
    case CTA_PROTO_NUM: if (len >= 1) t->proto = *KS_NLA_DATA(a); break;
    case CTA_PROTO_SRC_PORT: if (len >= 2) t->sport = be16(a); break;
    case CTA_PROTO_DST_PORT: if (len >= 2) t->dport = be16(a); break;
    case CTA_PROTO_ICMP_ID: case CTA_PROTO_ICMPV6_ID: if (len >= 2) t->icmp_id = be16(a); break;
    case CTA_PROTO_ICMP_TYPE: case CTA_PROTO_ICMPV6_TYPE: if (len >= 1) t->icmp_type = *KS_NLA_DATA(a); break;
    case CTA_PROTO_ICMP_CODE: case CTA_PROTO_ICMPV6_CODE: if (len >= 1) t->icmp_code = *KS_NLA_DATA(a); break;
    }
}

static void tuple(const struct nlattr *a, void *ctx) {
    switch (KS_NLA_TYPE(a)) {
    case CTA_TUPLE_IP: walk(KS_NLA_DATA(a), KS_NLA_LEN(a), tuple_ip, ctx); break;
    case CTA_TUPLE_PROTO: walk(KS_NLA_DATA(a), KS_NLA_LEN(a), tuple_proto, ctx); break;
    }
}

struct message {
    struct tuple orig, repl;
    int has_orig, has_tcp_state;
    ks_ct *out;
};

static void tcp_info(const struct nlattr *a, void *ctx) {
    struct message *m = ctx;
    int len = KS_NLA_LEN(a);
    switch (KS_NLA_TYPE(a)) {
    case CTA_PROTOINFO_TCP_STATE: if (len >= 1) { m->out->tcp_state = *KS_NLA_DATA(a); m->has_tcp_state = 1; } break;
    // struct nf_ct_tcp_flags { flags; mask; }
    case CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: if (len >= 1) m->out->tcp_flags_orig = *KS_NLA_DATA(a); break;
    case CTA_PROTOINFO_TCP_FLAGS_REPLY: if (len >= 1) m->out->tcp_flags_repl = *KS_NLA_DATA(a); break;
    }
}

static void protoinfo(const struct nlattr *a, void *ctx) {
    if (KS_NLA_TYPE(a) == CTA_PROTOINFO_TCP) walk(KS_NLA_DATA(a), KS_NLA_LEN(a), tcp_info, ctx);
}

static void top(const struct nlattr *a, void *ctx) {
    struct message *m = ctx;
    int len = KS_NLA_LEN(a);
    switch (KS_NLA_TYPE(a)) {
    case CTA_TUPLE_ORIG: m->has_orig = 1; walk(KS_NLA_DATA(a), len, tuple, &m->orig); break;
    case CTA_TUPLE_REPLY: walk(KS_NLA_DATA(a), len, tuple, &m->repl); break;
    case CTA_STATUS: if (len >= 4) m->out->status = be32(a); break;
    case CTA_TIMEOUT: if (len >= 4) m->out->timeout = be32(a); break;
    case CTA_MARK: if (len >= 4) m->out->mark = be32(a); break;
    case CTA_ZONE: if (len >= 2) m->out->zone = be16(a); break;
    case CTA_PROTOINFO: walk(KS_NLA_DATA(a), len, protoinfo, m); break;
    }
}

/// The reply type the kernel keys an ICMP entry's reply by (echo reply for an echo request).
static uint8_t icmp_reply_type(uint8_t proto, uint8_t type) {
    if (proto == IPPROTO_ICMP)
        return type == 8 ? 0 : type == 13 ? 14 : type == 15 ? 16 : type == 17 ? 18 : type;
    return type == 128 ? 129 : type;
}

int ks_ct_parse_message(const struct nlmsghdr *nlh, ks_ct *out) {
    if ((nlh->nlmsg_type >> 8) != NFNL_SUBSYS_CTNETLINK) return 0;
    uint8_t type = nlh->nlmsg_type & 0xff;
    uint8_t event;
    if (type == IPCTNL_MSG_CT_DELETE) {
        event = KS_EVENT_DESTROY;
    } else if (type == IPCTNL_MSG_CT_NEW) {
        event = (nlh->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) ? KS_EVENT_NEW : KS_EVENT_UPDATE;
    } else {
        return 0;
    }
    size_t header = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    if (nlh->nlmsg_len < header) return 0;
    const struct nfgenmsg *nfg = (const struct nfgenmsg *)((const uint8_t *)nlh + NLMSG_HDRLEN);
    memset(out, 0, sizeof *out);
    struct message m;
    memset(&m, 0, sizeof m);
    m.out = out;
    walk((const uint8_t *)nlh + header, (int)(nlh->nlmsg_len - header), top, &m);
    if (!m.has_orig) return 0;
    out->family = nfg->nfgen_family == AF_INET6 ? 6 : 4;
    out->proto = m.orig.proto;
    out->event = event;
    int alen = out->family == 6 ? 16 : 4;
    memcpy(out->orig_src, m.orig.src, alen);
    memcpy(out->orig_dst, m.orig.dst, alen);
    memcpy(out->repl_src, m.repl.src, alen);
    memcpy(out->repl_dst, m.repl.dst, alen);
    if (out->proto == IPPROTO_ICMP || out->proto == IPPROTO_ICMPV6) {
        out->orig_sport = m.orig.icmp_id;
        out->orig_dport = (uint16_t)(m.orig.icmp_type << 8 | m.orig.icmp_code);
        out->repl_sport = out->orig_sport;
        out->repl_dport = (uint16_t)(icmp_reply_type(out->proto, m.orig.icmp_type) << 8 | m.orig.icmp_code);
    } else {
        out->orig_sport = m.orig.sport;
        out->orig_dport = m.orig.dport;
        out->repl_sport = m.repl.sport;
        out->repl_dport = m.repl.dport;
    }
    if (out->proto != IPPROTO_TCP) {
        out->tcp_state = 0;
        out->tcp_flags_orig = 0;
        out->tcp_flags_repl = 0;
    }
    return 1;
}

/// Parses every message of one datagram. Returns 1 at NLMSG_DONE, -1 (errno set) at an error
/// message, 0 otherwise. With `seq` nonzero, messages of another sequence are skipped.
static int parse_datagram(const uint8_t *buf, size_t len, uint32_t seq, struct ks_batch *b) {
    const struct nlmsghdr *nlh = (const struct nlmsghdr *)buf;
    int remaining = (int)len;
    for (; NLMSG_OK(nlh, remaining); nlh = NLMSG_NEXT(nlh, remaining)) {
        if (seq != 0 && nlh->nlmsg_seq != seq) continue;
        if (nlh->nlmsg_type == NLMSG_DONE) return 1;
        if (nlh->nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *e = NLMSG_DATA(nlh);
            if (nlh->nlmsg_len >= NLMSG_LENGTH(sizeof(int)) && e->error != 0) {
                errno = -e->error;
                return -1;
            }
            continue;
        }
        if (ks_ct_parse_message(nlh, ks_batch_slot(b)) == 1) ks_batch_added(b);
    }
    return 0;
}

enum { KS_EVENT_DATAGRAMS = 64, KS_EVENT_DATAGRAM_BYTES = 8192 };

/// One receive area per event thread (64 datagrams of 8 KiB), made at its first read and freed
/// when the thread ends (a VRF's event thread ends with its dataplane).
static pthread_key_t event_area_key;
static pthread_once_t event_area_once = PTHREAD_ONCE_INIT;
static void make_event_area_key(void) { pthread_key_create(&event_area_key, free); }

static uint8_t *thread_event_area(void) {
    pthread_once(&event_area_once, make_event_area_key);
    uint8_t *area = pthread_getspecific(event_area_key);
    if (!area) {
        area = malloc((size_t)KS_EVENT_DATAGRAMS * KS_EVENT_DATAGRAM_BYTES);
        if (area && pthread_setspecific(event_area_key, area) != 0) {
            free(area);
            area = NULL;
        }
    }
    return area;
}

int ks_ct_read_events_fd(int fd, ks_ct_sink sink, void *context) {
    uint8_t *event_area = thread_event_area();
    if (!event_area) { errno = ENOMEM; return -1; }
    struct ks_batch *b = malloc(sizeof *b);
    if (!b) { errno = ENOMEM; return -1; }
    b->count = 0;
    b->delivered = 0;
    b->sink = sink;
    b->context = context;
    struct mmsghdr msgs[KS_EVENT_DATAGRAMS];
    struct iovec iov[KS_EVENT_DATAGRAMS];
    int failure = 0;
    // At most 16 rounds (1,024 datagrams) a call, so that a steady stream is delivered in parts.
    for (int round = 0; round < 16; round++) {
        for (int i = 0; i < KS_EVENT_DATAGRAMS; i++) {
            iov[i].iov_base = event_area + (size_t)i * KS_EVENT_DATAGRAM_BYTES;
            iov[i].iov_len = KS_EVENT_DATAGRAM_BYTES;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs, KS_EVENT_DATAGRAMS, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR) { round--; continue; }
            if (errno != EAGAIN && errno != EWOULDBLOCK) failure = errno;
            break;
        }
        for (int i = 0; i < n; i++) {
            // A datagram cut short (MSG_TRUNC) loses an event: reported as an overrun.
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) { failure = ENOBUFS; continue; }
            parse_datagram(iov[i].iov_base, msgs[i].msg_len, 0, b);
        }
        if (failure) break;
    }
    ks_batch_flush(b);
    int delivered = b->delivered;
    free(b);
    if (failure) {
        errno = failure;
        return -1;
    }
    return delivered;
}

int ks_ct_dump_fd(int fd, uint8_t family, uint32_t seq, ks_ct_sink sink, void *context) {
    struct {
        struct nlmsghdr nlh;
        struct nfgenmsg nfg;
    } request;
    memset(&request, 0, sizeof request);
    request.nlh.nlmsg_len = NLMSG_LENGTH(sizeof(struct nfgenmsg));
    request.nlh.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    request.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.nlh.nlmsg_seq = seq;
    request.nfg.nfgen_family = family == 4 ? AF_INET : family == 6 ? AF_INET6 : AF_UNSPEC;
    request.nfg.version = NFNETLINK_V0;
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    for (;;) {
        if (sendto(fd, &request, request.nlh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) >= 0) break;
        if (errno != EINTR) return -1;
    }
    // The kernel sizes its dump datagrams after the largest read it saw (up to 32 KiB).
    size_t cap = 64 << 10;
    uint8_t *buf = malloc(cap);
    struct ks_batch *b = malloc(sizeof *b);
    if (!buf || !b) { free(buf); free(b); errno = ENOMEM; return -1; }
    b->count = 0;
    b->delivered = 0;
    b->sink = sink;
    b->context = context;
    int result = 0;
    for (;;) {
        struct iovec iov = { .iov_base = buf, .iov_len = cap };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n = recvmsg(fd, &msg, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            result = -1;
            break;
        }
        if (n == 0 || (msg.msg_flags & MSG_TRUNC)) {
            errno = n == 0 ? EIO : ENOBUFS;
            result = -1;
            break;
        }
        int r = parse_datagram(buf, (size_t)n, seq, b);
        if (r != 0) {
            result = r < 0 ? -1 : 0;
            break;
        }
    }
    int e = errno;
    ks_batch_flush(b);
    free(b);
    free(buf);
    errno = e;
    return result;
}
