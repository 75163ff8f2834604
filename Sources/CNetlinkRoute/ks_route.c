#define _GNU_SOURCE
#include "ks_route.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/macvlan.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct ks_rt {
    struct nl_sock *sk;
    int kernel_errno;        // errno of the kernel's last NLMSG_ERROR, 0 if none
    uint8_t *buffer;         // receive buffer of a watching socket
};

enum { KS_RT_BUFFER = 64 << 10 };

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

/// Keeps the kernel's own errno: libnl folds several into one of its codes (ENODEV and ENOENT
/// both become "object not found" in some paths). NL_STOP lets libnl fail the call as usual.
static int keep_errno(struct sockaddr_nl *who, struct nlmsgerr *e, void *arg) {
    (void)who;
    ((ks_rt *)arg)->kernel_errno = -e->error;
    return NL_STOP;
}

/// Sets errno for a libnl failure `nlerr` (negative NLE_*) and returns -1.
static int fail(ks_rt *rt, int nlerr) {
    if (rt->kernel_errno != 0) { errno = rt->kernel_errno; return -1; }
    switch (-nlerr) {
    case NLE_INTR: errno = EINTR; break;
    case NLE_BAD_SOCK: errno = EBADF; break;
    case NLE_AGAIN: errno = EAGAIN; break;
    case NLE_NOMEM: errno = ENOMEM; break;
    case NLE_EXIST: errno = EEXIST; break;
    case NLE_INVAL: case NLE_MISSING_ATTR: case NLE_AF_MISMATCH: errno = EINVAL; break;
    case NLE_RANGE: errno = ERANGE; break;
    case NLE_MSGSIZE: errno = EMSGSIZE; break;
    case NLE_OPNOTSUPP: errno = EOPNOTSUPP; break;
    case NLE_AF_NOSUPPORT: errno = EAFNOSUPPORT; break;
    case NLE_OBJ_NOTFOUND: case NLE_NODEV: errno = ENODEV; break;
    case NLE_NOADDR: errno = EADDRNOTAVAIL; break;
    case NLE_BUSY: errno = EBUSY; break;
    case NLE_NOACCESS: errno = EACCES; break;
    case NLE_PERM: errno = EPERM; break;
    default: errno = EIO; break;
    }
    return -1;
}

ks_rt *ks_rt_open(const char *netns_path, int watch) {
    ks_rt *rt = calloc(1, sizeof *rt);
    if (rt == NULL) return NULL;
    rt->sk = nl_socket_alloc();
    if (watch) rt->buffer = malloc(KS_RT_BUFFER);
    if (rt->sk == NULL || (watch && rt->buffer == NULL)) {
        ks_rt_close(rt);
        errno = ENOMEM;
        return NULL;
    }
    int self;
    if (enter_netns(netns_path, &self) != 0) {
        int e = errno;
        ks_rt_close(rt);
        errno = e;
        return NULL;
    }
    int r = nl_connect(rt->sk, NETLINK_ROUTE);   // socket(2) runs here, in the namespace
    leave_netns(self);
    if (r < 0) {
        fail(rt, r);
        int e = errno;
        ks_rt_close(rt);
        errno = e;
        return NULL;
    }
    nl_socket_modify_err_cb(rt->sk, NL_CB_CUSTOM, keep_errno, rt);
    if (watch) {
        r = nl_socket_add_memberships(rt->sk, RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, 0);
        if (r == 0) r = nl_socket_set_nonblocking(rt->sk);
        int room = 1 << 20;
        int fd = nl_socket_get_fd(rt->sk);
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &room, sizeof room) != 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &room, sizeof room);
        if (r < 0) {
            fail(rt, r);
            int e = errno;
            ks_rt_close(rt);
            errno = e;
            return NULL;
        }
    }
    return rt;
}

void ks_rt_close(ks_rt *rt) {
    if (rt == NULL) return;
    if (rt->sk) nl_socket_free(rt->sk);   // closes the descriptor too
    free(rt->buffer);
    free(rt);
}

int ks_rt_fd(ks_rt *rt) { return nl_socket_get_fd(rt->sk); }

static void copy_string(char *dst, size_t size, const char *src) {
    memset(dst, 0, size);
    if (src) strncpy(dst, src, size - 1);
}

static void flatten_link(struct rtnl_link *l, ks_rt_link *out) {
    memset(out, 0, sizeof *out);
    out->index = rtnl_link_get_ifindex(l);
    out->flags = rtnl_link_get_flags(l);
    out->mtu = rtnl_link_get_mtu(l);
    out->parent = rtnl_link_get_link(l);
    out->operstate = rtnl_link_get_operstate(l);
    copy_string(out->name, sizeof out->name, rtnl_link_get_name(l));
    copy_string(out->kind, sizeof out->kind, rtnl_link_get_type(l));
    if (rtnl_link_is_macvlan(l)) out->macvlan_mode = rtnl_link_macvlan_get_mode(l);
    struct nl_addr *mac = rtnl_link_get_addr(l);
    if (mac) {
        unsigned len = nl_addr_get_len(mac);
        if (len > sizeof out->mac) len = sizeof out->mac;
        memcpy(out->mac, nl_addr_get_binary_addr(mac), len);
        out->mac_len = (uint8_t)len;
    }
}

/// 0 when `a` is an IPv4 or IPv6 address with a local address, else -1.
static int flatten_addr(struct rtnl_addr *a, ks_rt_addr *out) {
    memset(out, 0, sizeof *out);
    int family = rtnl_addr_get_family(a);
    struct nl_addr *local = rtnl_addr_get_local(a);
    if ((family != AF_INET && family != AF_INET6) || local == NULL) return -1;
    out->index = rtnl_addr_get_ifindex(a);
    out->family = family == AF_INET ? 4 : 6;
    out->prefix = (uint8_t)rtnl_addr_get_prefixlen(a);
    out->flags = rtnl_addr_get_flags(a);
    unsigned len = nl_addr_get_len(local);
    memcpy(out->bytes, nl_addr_get_binary_addr(local), len > 16 ? 16 : len);
    if (family == AF_INET) copy_string(out->label, sizeof out->label, rtnl_addr_get_label(a));
    return 0;
}

int ks_rt_link_get(ks_rt *rt, const char *name, ks_rt_link *out) {
    rt->kernel_errno = 0;
    struct rtnl_link *l = NULL;
    int r = rtnl_link_get_kernel(rt->sk, 0, name, &l);
    if (r < 0) return fail(rt, r);
    flatten_link(l, out);
    rtnl_link_put(l);
    return 0;
}

int ks_rt_links(ks_rt *rt, ks_rt_link_sink sink, void *context) {
    rt->kernel_errno = 0;
    struct nl_cache *cache = NULL;
    int r = rtnl_link_alloc_cache(rt->sk, AF_UNSPEC, &cache);
    if (r < 0) return fail(rt, r);
    int count = 0;
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        ks_rt_link flat;
        flatten_link((struct rtnl_link *)o, &flat);
        sink(&flat, context);
        count++;
    }
    nl_cache_free(cache);
    return count;
}

int ks_rt_link_set_up(ks_rt *rt, int32_t index, int up) {
    rt->kernel_errno = 0;
    struct rtnl_link *orig = rtnl_link_alloc(), *change = rtnl_link_alloc();
    int r = -NLE_NOMEM;
    if (orig && change) {
        rtnl_link_set_ifindex(orig, index);
        if (up) rtnl_link_set_flags(change, IFF_UP);
        else rtnl_link_unset_flags(change, IFF_UP);
        r = rtnl_link_change(rt->sk, orig, change, 0);
    }
    rtnl_link_put(orig);
    rtnl_link_put(change);
    return r < 0 ? fail(rt, r) : 0;
}

int ks_rt_bridge_port_set_state(ks_rt *rt, int32_t index, uint8_t state) {
    rt->kernel_errno = 0;
    // What `bridge link set dev PORT state N` sends: RTM_SETLINK of family AF_BRIDGE with the
    // port's state nested in IFLA_PROTINFO.
    struct nl_msg *msg = nlmsg_alloc_simple(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK);
    if (!msg) return fail(rt, -NLE_NOMEM);
    struct ifinfomsg ifi = { .ifi_family = AF_BRIDGE, .ifi_index = index };
    int r = nlmsg_append(msg, &ifi, sizeof(ifi), NLMSG_ALIGNTO);
    struct nlattr *info = r < 0 ? NULL : nla_nest_start(msg, IFLA_PROTINFO | NLA_F_NESTED);
    if (!info) r = r < 0 ? r : -NLE_NOMEM;
    if (r == 0) r = nla_put_u8(msg, IFLA_BRPORT_STATE, state);
    if (r == 0) r = nla_nest_end(msg, info);
    if (r == 0) r = nl_send_auto(rt->sk, msg);
    nlmsg_free(msg);
    if (r >= 0) r = nl_wait_for_ack(rt->sk);
    return r < 0 ? fail(rt, r) : 0;
}

int ks_rt_macvlan_add(ks_rt *rt, const char *name, int32_t parent, const uint8_t mac[6]) {
    rt->kernel_errno = 0;
    struct rtnl_link *l = rtnl_link_macvlan_alloc();
    struct nl_addr *lladdr = nl_addr_build(AF_LLC, mac, 6);
    int r = -NLE_NOMEM;
    if (l && lladdr) {
        rtnl_link_set_name(l, name);
        rtnl_link_set_link(l, parent);
        rtnl_link_set_addr(l, lladdr);
        rtnl_link_set_flags(l, IFF_UP);
        r = rtnl_link_macvlan_set_mode(l, MACVLAN_MODE_PRIVATE);
        if (r == 0) r = rtnl_link_add(rt->sk, l, NLM_F_CREATE | NLM_F_EXCL);
    }
    nl_addr_put(lladdr);
    rtnl_link_put(l);
    return r < 0 ? fail(rt, r) : 0;
}

int ks_rt_link_del(ks_rt *rt, const char *name) {
    rt->kernel_errno = 0;
    struct rtnl_link *l = rtnl_link_alloc();
    if (l == NULL) return fail(rt, -NLE_NOMEM);
    rtnl_link_set_name(l, name);
    int r = rtnl_link_delete(rt->sk, l);
    rtnl_link_put(l);
    return r < 0 ? fail(rt, r) : 0;
}

int ks_rt_addrs(ks_rt *rt, int32_t index, ks_rt_addr_sink sink, void *context) {
    rt->kernel_errno = 0;
    struct nl_cache *cache = NULL;
    int r = rtnl_addr_alloc_cache(rt->sk, &cache);
    if (r < 0) return fail(rt, r);
    int count = 0;
    for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
        ks_rt_addr flat;
        if (flatten_addr((struct rtnl_addr *)o, &flat) != 0 || (index != 0 && flat.index != index)) continue;
        sink(&flat, context);
        count++;
    }
    nl_cache_free(cache);
    return count;
}

/// A libnl address object for `in` (without its label). NULL when out of memory.
static struct rtnl_addr *make_addr(const ks_rt_addr *in) {
    struct rtnl_addr *a = rtnl_addr_alloc();
    int family = in->family == 6 ? AF_INET6 : AF_INET;
    struct nl_addr *local = nl_addr_build(family, in->bytes, in->family == 6 ? 16 : 4);
    if (a == NULL || local == NULL) {
        rtnl_addr_put(a);
        nl_addr_put(local);
        return NULL;
    }
    rtnl_addr_set_ifindex(a, in->index);
    rtnl_addr_set_family(a, family);
    rtnl_addr_set_local(a, local);   // also sends it as IFA_ADDRESS
    rtnl_addr_set_prefixlen(a, in->prefix);
    nl_addr_put(local);
    return a;
}

int ks_rt_addr_add(ks_rt *rt, const ks_rt_addr *in) {
    rt->kernel_errno = 0;
    struct rtnl_addr *a = make_addr(in);
    if (a == NULL) return fail(rt, -NLE_NOMEM);
    rtnl_addr_set_scope(a, RT_SCOPE_UNIVERSE);
    int r = 0;
    if (in->family == 4 && in->label[0] != 0) r = rtnl_addr_set_label(a, in->label);
    // Without duplicate address detection the address is usable at once (not "tentative" for
    // a second or more, during which binding to it fails).
    if (in->family == 6) rtnl_addr_set_flags(a, IFA_F_NODAD);
    if (r == 0) r = rtnl_addr_add(rt->sk, a, NLM_F_EXCL);
    rtnl_addr_put(a);
    return r < 0 ? fail(rt, r) : 0;
}

int ks_rt_addr_del(ks_rt *rt, const ks_rt_addr *in) {
    rt->kernel_errno = 0;
    struct rtnl_addr *a = make_addr(in);
    if (a == NULL) return fail(rt, -NLE_NOMEM);
    int r = rtnl_addr_delete(rt->sk, a, 0);
    rtnl_addr_put(a);
    return r < 0 ? fail(rt, r) : 0;
}

struct event_parse {
    ks_rt_event event;
    int ok;
};

static void parsed(struct nl_object *o, void *arg) {
    struct event_parse *p = arg;
    if (p->event.kind == KS_RT_LINK_NEW || p->event.kind == KS_RT_LINK_DEL) {
        flatten_link((struct rtnl_link *)o, &p->event.link);
        p->ok = 1;
    } else {
        p->ok = flatten_addr((struct rtnl_addr *)o, &p->event.addr) == 0;
    }
}

int ks_rt_read_events(ks_rt *rt, ks_rt_event_sink sink, void *context) {
    int fd = nl_socket_get_fd(rt->sk), delivered = 0;
    for (;;) {
        ssize_t n = recv(fd, rt->buffer, KS_RT_BUFFER, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return delivered;
            return -1;
        }
        int left = (int)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)rt->buffer; nlmsg_ok(h, left); h = nlmsg_next(h, &left)) {
            struct event_parse p = {0};
            switch (h->nlmsg_type) {
            case RTM_NEWLINK: p.event.kind = KS_RT_LINK_NEW; break;
            case RTM_DELLINK: p.event.kind = KS_RT_LINK_DEL; break;
            case RTM_NEWADDR: p.event.kind = KS_RT_ADDR_NEW; break;
            case RTM_DELADDR: p.event.kind = KS_RT_ADDR_DEL; break;
            default: continue;
            }
            // RTNLGRP_LINK also carries bridge-port messages (AF_BRIDGE) about the same links.
            if (p.event.kind <= KS_RT_LINK_DEL && ((struct ifinfomsg *)nlmsg_data(h))->ifi_family != AF_UNSPEC) continue;
            struct nl_msg *msg = nlmsg_convert(h);
            if (msg == NULL) { errno = ENOMEM; return -1; }
            nlmsg_set_proto(msg, NETLINK_ROUTE);
            nl_msg_parse(msg, parsed, &p);
            nlmsg_free(msg);
            if (p.ok) {
                sink(&p.event, context);
                delivered++;
            }
        }
    }
}
