#define _GNU_SOURCE
#include "ks_vrrpnet.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>

int ks_vrrp_netns_enter(const char *path, int *self_fd) {
    *self_fd = -1;
    if (path == NULL) return 0;
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) return -1;
    int target = open(path, O_RDONLY | O_CLOEXEC);
    if (target < 0 || setns(target, CLONE_NEWNET) != 0) {
        int e = errno;
        if (target >= 0) close(target);
        close(self);
        errno = e;
        return -1;
    }
    close(target);
    *self_fd = self;
    return 0;
}

void ks_vrrp_netns_leave(int self_fd) {
    if (self_fd < 0) return;
    int e = errno;
    if (setns(self_fd, CLONE_NEWNET) != 0) abort();
    close(self_fd);
    errno = e;
}

ssize_t ks_vrrp6_recv(int fd, uint8_t *buf, size_t cap, uint8_t *src, uint8_t *dst,
                      int *hop_limit, int *ifindex, int *truncated) {
    struct sockaddr_in6 from;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    union {
        char bytes[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(int)) + 64];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {
        .msg_name = &from, .msg_namelen = sizeof(from),
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.bytes, .msg_controllen = sizeof(control.bytes),
    };
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n < 0) return -1;
    memcpy(src, &from.sin6_addr, 16);
    memset(dst, 0, 16);
    *hop_limit = -1;
    *ifindex = 0;
    *truncated = (msg.msg_flags & MSG_TRUNC) ? 1 : 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != IPPROTO_IPV6) continue;
        if (c->cmsg_type == IPV6_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
            struct in6_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            memcpy(dst, &info.ipi6_addr, 16);
            *ifindex = (int)info.ipi6_ifindex;
        } else if (c->cmsg_type == IPV6_HOPLIMIT && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int h;
            memcpy(&h, CMSG_DATA(c), sizeof(h));
            *hop_limit = h;
        }
    }
    return n;
}

ssize_t ks_vrrp6_send(int fd, const uint8_t *buf, size_t len, const uint8_t *dst, uint32_t dst_scope,
                      const uint8_t *src, int ifindex) {
    struct sockaddr_in6 to;
    memset(&to, 0, sizeof(to));
    to.sin6_family = AF_INET6;
    memcpy(&to.sin6_addr, dst, 16);
    to.sin6_scope_id = dst_scope;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char bytes[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct msghdr msg = {
        .msg_name = &to, .msg_namelen = sizeof(to),
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.bytes, .msg_controllen = sizeof(control.bytes),
    };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
    struct in6_pktinfo info;
    memset(&info, 0, sizeof(info));
    memcpy(&info.ipi6_addr, src, 16);
    info.ipi6_ifindex = (unsigned)ifindex;
    memcpy(CMSG_DATA(c), &info, sizeof(info));
    return sendmsg(fd, &msg, 0);
}

int ks_vrrp_attach_drop_all_filter(int fd) {
    struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
    struct sock_fprog prog = {.len = 1, .filter = code};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}

int ks_vrrp_bind_to_device(int fd, const char *ifname) {
    return setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strnlen(ifname, IFNAMSIZ));
}

ssize_t ks_vrrp_packet_send(int fd, int ifindex, const uint8_t *dst_mac, uint16_t ethertype,
                            const uint8_t *frame, size_t len) {
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof(sll));
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = ifindex;
    sll.sll_protocol = htons(ethertype);
    sll.sll_halen = 6;
    memcpy(sll.sll_addr, dst_mac, 6);
    return sendto(fd, frame, len, 0, (struct sockaddr *)&sll, sizeof(sll));
}

int ks_vrrp_sockaddr_ll_info(const struct sockaddr *sa, uint8_t *mac, size_t cap, int *ifindex) {
    const struct sockaddr_ll *ll = (const struct sockaddr_ll *)sa;
    *ifindex = ll->sll_ifindex;
    size_t n = ll->sll_halen;
    if (n > sizeof(ll->sll_addr)) n = sizeof(ll->sll_addr);
    memcpy(mac, ll->sll_addr, n < cap ? n : cap);
    return (int)n;
}
