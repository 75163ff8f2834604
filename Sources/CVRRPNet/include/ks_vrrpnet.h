#ifndef KS_VRRPNET_H
#define KS_VRRPNET_H

// What VRRPNet needs from Linux that Swift's Glibc module does not show: setns (a _GNU_SOURCE
// declaration), the IPv6 packet-info/hop-limit control messages (CMSG_* are macros), and the
// AF_PACKET, BPF and eventfd headers. Everything else is called from Swift through Glibc.

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <linux/filter.h>

/// Moves the calling thread into the network namespace at `path` (a bind mount such as
/// /run/netns/NAME, or /proc/PID/ns/net). `*self_fd` receives a descriptor of the thread's own
/// namespace for `ks_vrrp_netns_leave`. NULL path: nothing happens and *self_fd is -1.
/// Returns 0, or -1 with errno.
int ks_vrrp_netns_enter(const char *path, int *self_fd);

/// Moves the calling thread back to the namespace `self_fd` names and closes it. A failure to go
/// back would leave a thread of the process in a foreign namespace: the process aborts.
void ks_vrrp_netns_leave(int self_fd);

/// One datagram from a raw IPv6 socket with IPV6_RECVPKTINFO and IPV6_RECVHOPLIMIT on.
/// Returns the message length (0 ... cap), or -1 with errno (EAGAIN when nothing is queued).
/// `src`, `dst` receive 16 bytes each; `hop_limit` -1 and `dst` zero when the control message is
/// missing; `ifindex` the arrival interface (0 if unknown); `truncated` 1 if the datagram did not
/// fit in `cap`.
ssize_t ks_vrrp6_recv(int fd, uint8_t *buf, size_t cap, uint8_t *src, uint8_t *dst,
                      int *hop_limit, int *ifindex, int *truncated);

/// Sends `len` bytes to `dst` (16 bytes; `dst_scope` the scope id for link-local and multicast
/// destinations) from source `src` (16 bytes) out of interface `ifindex`, given as an
/// IPV6_PKTINFO control message. Returns bytes sent or -1 with errno.
ssize_t ks_vrrp6_send(int fd, const uint8_t *buf, size_t len, const uint8_t *dst, uint32_t dst_scope,
                      const uint8_t *src, int ifindex);

/// Attaches a classic BPF program that accepts no packet (for send-only raw sockets, which would
/// otherwise queue every matching packet). Returns 0 or -1 with errno.
int ks_vrrp_attach_drop_all_filter(int fd);

/// SO_BINDTODEVICE. Returns 0 or -1 with errno.
int ks_vrrp_bind_to_device(int fd, const char *ifname);

/// Sends one complete Ethernet frame on an AF_PACKET socket out of `ifindex` to `dst_mac` (6 bytes).
ssize_t ks_vrrp_packet_send(int fd, int ifindex, const uint8_t *dst_mac, uint16_t ethertype,
                            const uint8_t *frame, size_t len);

/// Reads the MAC address of the AF_PACKET address in a getifaddrs entry; returns its length
/// (0 ... 32) and copies at most `cap` bytes, and the interface index.
int ks_vrrp_sockaddr_ll_info(const struct sockaddr *sa, uint8_t *mac, size_t cap, int *ifindex);

#endif
