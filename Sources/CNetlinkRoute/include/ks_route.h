// The only C that Keepstate writes around libnl-route-3: flat structs for links, addresses and
// events, and rtnetlink sockets opened in a network namespace. Only the NetlinkRoute Swift
// target imports this module. No libnl header is included here, so Swift never sees one (and
// never libnetfilter's, whose linux_nfnetlink.h clashes with the headers libnl pulls in).
#ifndef KS_ROUTE_H
#define KS_ROUTE_H

#include <stdint.h>

/// One rtnetlink socket (libnl `nl_sock`) and the kernel's errno of its last refused request.
typedef struct ks_rt ks_rt;

/// A link, flat. `flags` are the IFF_* flags (IFF_UP 0x1, IFF_RUNNING 0x40, IFF_LOWER_UP
/// 0x10000); `kind` is IFLA_INFO_KIND ("veth", "macvlan"; empty when the kernel gives none);
/// `parent` is IFLA_LINK (0 when none); `macvlan_mode` is IFLA_MACVLAN_MODE (0 unless macvlan).
typedef struct ks_rt_link {
    int32_t index;
    uint32_t flags;
    uint32_t mtu;
    int32_t parent;
    uint32_t macvlan_mode;
    uint8_t operstate;       // IF_OPER_*
    uint8_t mac_len;
    uint8_t mac[32];
    char name[16];
    char kind[16];
} ks_rt_link;

/// An interface address, flat. `bytes` in network order (IPv4 in the first 4); `label` is
/// IFA_LABEL (IPv4 only; empty for IPv6); `flags` are IFA_F_*.
typedef struct ks_rt_addr {
    int32_t index;
    uint8_t family;          // 4 or 6
    uint8_t prefix;
    uint8_t bytes[16];
    uint32_t flags;
    char label[16];
} ks_rt_addr;

enum {
    KS_RT_LINK_NEW = 0,      // RTM_NEWLINK: a link appeared or changed
    KS_RT_LINK_DEL = 1,      // RTM_DELLINK
    KS_RT_ADDR_NEW = 2,      // RTM_NEWADDR
    KS_RT_ADDR_DEL = 3,      // RTM_DELADDR
};

/// One event: `link` is valid for KS_RT_LINK_*, `addr` for KS_RT_ADDR_*.
typedef struct ks_rt_event {
    uint8_t kind;
    ks_rt_link link;
    ks_rt_addr addr;
} ks_rt_event;

typedef void (*ks_rt_link_sink)(const ks_rt_link *link, void *context);
typedef void (*ks_rt_addr_sink)(const ks_rt_addr *addr, void *context);
typedef void (*ks_rt_event_sink)(const ks_rt_event *event, void *context);

/// Opens an rtnetlink socket inside the network namespace at `netns_path` (NULL: the caller's
/// own). With `watch` set, the socket is non-blocking and subscribed to RTNLGRP_LINK,
/// RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR, for `ks_rt_read_events` only. The calling thread
/// returns to its own namespace before this function returns; the socket stays in the one it was
/// made in, so every later request acts there. NULL with errno on failure.
ks_rt *ks_rt_open(const char *netns_path, int watch);
void ks_rt_close(ks_rt *rt);
int ks_rt_fd(ks_rt *rt);

// Every function below returns 0 (or a count), or -1 with errno: the kernel's own errno when it
// refused the request, else the closest errno to libnl's error.

/// The link called `name` (ENODEV when there is none).
int ks_rt_link_get(ks_rt *rt, const char *name, ks_rt_link *out);
/// Every link of the namespace.
int ks_rt_links(ks_rt *rt, ks_rt_link_sink sink, void *context);
/// Sets (up != 0) or clears IFF_UP on the link `index`.
int ks_rt_link_set_up(ks_rt *rt, int32_t index, int up);
/// Sets the bridge port `index`'s STP state (0 disabled, 3 forwarding; the bridge must not run
/// the kernel's STP): a port that stops forwarding without its link going down.
int ks_rt_bridge_port_set_state(ks_rt *rt, int32_t index, uint8_t state);
/// Creates macvlan `name` on link `parent` (mode private, MAC `mac`, up). EEXIST if a link of
/// that name exists.
int ks_rt_macvlan_add(ks_rt *rt, const char *name, int32_t parent, const uint8_t mac[6]);
/// Deletes the link `name` (ENODEV when there is none).
int ks_rt_link_del(ks_rt *rt, const char *name);

/// Addresses of link `index` (0: every link).
int ks_rt_addrs(ks_rt *rt, int32_t index, ks_rt_addr_sink sink, void *context);
/// Adds `addr` exclusively (EEXIST when present): scope global, label when not empty (IPv4),
/// IFA_F_NODAD for IPv6.
int ks_rt_addr_add(ks_rt *rt, const ks_rt_addr *addr);
/// Deletes `addr` (matched by address and prefix; EADDRNOTAVAIL when absent).
int ks_rt_addr_del(ks_rt *rt, const ks_rt_addr *addr);

/// Reads the events waiting on a watching socket until it would block. Returns the number
/// delivered, or -1 with errno (ENOBUFS: the kernel dropped events; resynchronise by a dump).
int ks_rt_read_events(ks_rt *rt, ks_rt_event_sink sink, void *context);

#endif
